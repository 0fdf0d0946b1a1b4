"""The companion wrapper: records every bedrock-runtime call of an application in the usage log.

    from monitor.wrapper import instrument
    client = instrument(boto3.client("bedrock-runtime"))

or, without changing the application, ``bedrock-top run -- python app.py``.
"""

from monitor.wrapper.estimate import configure_estimator
from monitor.wrapper.hooks import instrument, is_instrumented
from monitor.wrapper.writer import dropped_records

__all__ = ["configure_estimator", "dropped_records", "instrument", "is_instrumented"]
