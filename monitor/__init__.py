"""bedrock-top: a live terminal monitor for Amazon Bedrock token usage."""

__version__ = "0.1.0"
