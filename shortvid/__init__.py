"""shortvid: real-time short-video classification on keyframes."""

__version__ = "0.1.0"
