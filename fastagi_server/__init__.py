"""agi-voice call-control plane: the asyncio FastAGI server and AMI client."""

__version__ = "0.1.0"
