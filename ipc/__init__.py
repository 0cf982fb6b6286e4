"""The wire between a station's processes: messages, encoding, endpoints, the client library."""
