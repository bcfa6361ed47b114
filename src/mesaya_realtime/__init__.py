"""mesaya-realtime: the realtime WebSocket gateway of the mesa-ya platform."""

__version__ = "0.1.0"
