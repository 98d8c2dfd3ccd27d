"""SDP: the model (parse, check, write) and the offer bridge for Janus 1.1.2."""
