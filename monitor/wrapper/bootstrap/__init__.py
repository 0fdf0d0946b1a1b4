"""Start-up hook directory for ``bedrock-top run`` (only ``sitecustomize`` matters here)."""
