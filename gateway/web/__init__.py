"""Browser pages: a stream list, a WHEP player and a WHIP publisher.

Plain HTML and JavaScript in ``static/`` (no build step); ``pages.routes``
serves them next to the WHIP and WHEP endpoints.
"""
