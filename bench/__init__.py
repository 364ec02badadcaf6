"""OnionChat's benchmark: a load generator beside the node (see issue 3)."""
