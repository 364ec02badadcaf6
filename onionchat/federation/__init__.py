"""Federation: nodes that share rooms through MQTT brokers (docs/federation.md).

`envelope` (what nodes say, sealed and signed), `link` (one broker), `repair` (catching up),
`network` (the feature the node is given: what it shares, publishes and takes in).
"""
