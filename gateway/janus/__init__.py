"""The Janus backend: the HTTP API client, nodes and their health, VideoRoom and
Streaming handles, the admin API, the reaper and the managed Janus process.
Nothing outside this package knows a Janus field name; failures leave it as
the gateway's own errors (``failures.janus_call``)."""
