"""HTTP resources: one module per resource, and the request/response helpers they share."""
