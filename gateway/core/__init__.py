"""The domain: streams, publishers and viewers, ingest and egress, events, auth, placement."""
