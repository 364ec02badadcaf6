"""Federation: nodes that share rooms through MQTT brokers (docs/federation.md).

`envelope` (what nodes say, sealed and signed), `link` (one broker), `repair` (catching up),
`presence` (who is present on the other nodes), `network` (the feature the node is given: what
it shares, publishes and takes in).
"""
