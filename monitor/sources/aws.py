"""One place that makes AWS clients and classifies their faults, for every AWS source.

Every source (CloudWatch metrics, CloudWatch Logs, Service Quotas, Cost Explorer, ...) opens its
clients through :class:`AwsConnection`, so that credentials, profiles, regions and endpoints
resolve exactly as botocore resolves them (the standard credential chain, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``, ``endpoint_url`` in the AWS config file), and
retries and timeouts are botocore's. ``--endpoint-url`` (an explicit ``endpoint_url``) applies to
every service. Faults become a :class:`SourceFailure` with a status the header shows and a message a
person can act on; :class:`SourceHealth` is the state every source reports alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final

# Status values every source reports (SourceHealth.status and the CloudWatch state).
STARTING: Final = "starting"
OK: Final = "ok"
STALE: Final = "stale"
ERROR: Final = "error"
DISABLED: Final = "disabled"
NO_CREDENTIALS: Final = "no-credentials"
ACCESS_DENIED: Final = "access-denied"

CREDENTIAL_ERROR_CODES: Final = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidSignatureException",
    }
)
ACCESS_DENIED_CODES: Final = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "NotAuthorized"}
)
THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "RequestThrottled",
        "RequestThrottledException",
    }
)

NO_CREDENTIALS_MESSAGE: Final = (
    "no AWS credentials found (environment, ~/.aws files, SSO, instance or container role): "
    "CloudWatch is off, the local log keeps working; set up credentials (aws configure, "
    "aws sso login, or --profile) or pass --no-cloudwatch"
)
NO_REGION_MESSAGE: Final = (
    "no AWS region: pass --region, set AWS_REGION, or set region for the profile in ~/.aws/config"
)


# The longest a headless run (--once) waits for one AWS source, all requests and retries together.
HEADLESS_DEADLINE_S: Final = 10.0


def deadline_passed(deadline_s: float = HEADLESS_DEADLINE_S) -> TimeoutError:
    """The fault a headless source reports when its report's deadline passed."""
    return TimeoutError(f"no answer within {deadline_s:g} s, the deadline of a report")


class SourceFailure(Exception):
    """A request failed; ``status`` says how the header should show it."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class AwsTarget:
    """Where a source's requests go. None everywhere means botocore's own resolution."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """What every source reports, so the header, the report's ``sources`` and the Prometheus
    gauges read them alike."""

    name: str
    status: str
    message: str = ""
    region: str | None = None
    last_good: float | None = None  # POSIX time of the last good request
    stale_since: float | None = None
    last_error: str | None = None
    cost_per_hour_usd: float = 0.0  # what this source's schedule costs the AWS bill

    @property
    def up(self) -> bool:
        return self.status == OK

    def as_report(self) -> dict[str, Any]:
        return {
            "state": self.status,
            "message": self.message,
            "region": self.region,
            "last_good": self.last_good,
            "stale_since": self.stale_since,
            "last_error": self.last_error,
            "cost_per_hour_usd": round(self.cost_per_hour_usd, 6),
        }


def classify_error(
    exc: BaseException,
    service: str = "CloudWatch",
    permissions: str = "cloudwatch:GetMetricData and cloudwatch:ListMetrics",
) -> SourceFailure:
    """Turn a botocore/aiohttp exception into a status and a message a person can act on.
    ``service`` names the source in messages; ``permissions`` is what access denied asks for."""
    from botocore import exceptions as bce

    if isinstance(exc, SourceFailure):
        return exc
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return SourceFailure(NO_CREDENTIALS, NO_CREDENTIALS_MESSAGE)
    sso_errors = bce.TokenRetrievalError | bce.SSOTokenLoadError | bce.UnauthorizedSSOTokenError
    if isinstance(exc, sso_errors):
        return SourceFailure(
            NO_CREDENTIALS, f"AWS SSO session expired or missing ({exc}); run `aws sso login`"
        )
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        text = str(error.get("Message", ""))[:200]
        http = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ACCESS_DENIED_CODES:
            return SourceFailure(
                ACCESS_DENIED,
                f"access denied: the credentials need {permissions} ({code}: {text})",
            )
        if code in CREDENTIAL_ERROR_CODES:
            return SourceFailure(
                NO_CREDENTIALS,
                f"AWS credentials rejected ({code}: {text}); refresh them (aws sso login, "
                "aws configure) and bedrock-top will pick them up",
            )
        if code in THROTTLING_CODES:
            return SourceFailure(STALE, f"{service} throttled the request ({code}); backing off")
        return SourceFailure(STALE, f"{service} error {code or http}: {text}".strip())
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectionClosedError):
        return SourceFailure(STALE, f"{service} unreachable: {exc}")
    if isinstance(exc, bce.ReadTimeoutError | bce.ConnectTimeoutError | asyncio.TimeoutError):
        return SourceFailure(STALE, f"{service} timed out: {exc or 'no answer'}")
    if isinstance(exc, bce.ProfileNotFound):
        return SourceFailure(ERROR, f"{exc}; check --profile and ~/.aws/config")
    if isinstance(exc, bce.BotoCoreError | OSError):
        return SourceFailure(STALE, f"{service} request failed: {exc}")
    return SourceFailure(STALE, f"{service} request failed: {type(exc).__name__}: {exc}")


class AwsConnection:
    """One aiobotocore session for one target: resolves the region and credentials once, then
    opens clients that share them. Close with :meth:`close` (clients are closed with it)."""

    def __init__(
        self,
        target: AwsTarget,
        *,
        retry_mode: str = "adaptive",
        max_attempts: int = 4,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 20.0,
    ) -> None:
        self.target = target
        self.region: str | None = target.region
        # botocore counts "total_max_attempts" including the first; "max_attempts" would be retries.
        self._retry = {"mode": retry_mode, "total_max_attempts": max(1, max_attempts)}
        self._timeouts = (connect_timeout_s, read_timeout_s)
        self._session: Any = None
        self._stack: AsyncExitStack | None = None

    async def open(self) -> str:
        """Resolve region and credentials; returns the region. Raises :class:`SourceFailure`
        (no region, no credentials) or botocore's errors (a missing profile)."""
        if self._session is not None and self.region:
            return self.region
        from aiobotocore.session import AioSession

        session = AioSession(profile=self.target.profile)
        region = self.target.region or session.get_config_variable("region")
        if not region:
            raise SourceFailure(ERROR, NO_REGION_MESSAGE)
        if await session.get_credentials() is None:
            raise SourceFailure(NO_CREDENTIALS, NO_CREDENTIALS_MESSAGE)
        self.region = region
        self._session = session
        self._stack = AsyncExitStack()
        return region

    async def client(
        self,
        service: str,
        *,
        max_attempts: int | None = None,
        read_timeout_s: float | None = None,
        **config: Any,
    ) -> Any:
        """An open aiobotocore client for ``service`` (opened with the connection if needed).
        ``max_attempts`` overrides the retries (1: fail fast); ``config`` goes to AioConfig (for
        example ``inject_host_prefix=False`` for StartLiveTail against a local endpoint)."""
        from aiobotocore.config import AioConfig

        region = await self.open()
        assert self._stack is not None
        retries = self._retry
        if max_attempts is not None:
            retries = {"mode": "standard", "total_max_attempts": max(1, max_attempts)}
        connect_timeout, read_timeout = self._timeouts
        kwargs: dict[str, Any] = {"region_name": region}
        # Only an explicit endpoint is passed: otherwise botocore resolves AWS_ENDPOINT_URL,
        # AWS_ENDPOINT_URL_<SERVICE> and the config file's endpoint_url itself.
        if self.target.endpoint_url:
            kwargs["endpoint_url"] = self.target.endpoint_url
        return await self._stack.enter_async_context(
            self._session.create_client(
                service,
                config=AioConfig(
                    retries=retries,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout if read_timeout_s is None else read_timeout_s,
                    user_agent_extra="bedrock-top",
                    **config,
                ),
                **kwargs,
            )
        )

    def endpoint_configured(self, service_env_name: str) -> bool:
        """Whether requests for a service go to a configured endpoint rather than AWS's own
        (``service_env_name`` as in ``AWS_ENDPOINT_URL_<NAME>``, e.g. ``CLOUDWATCH_LOGS``)."""
        import os

        if self.target.endpoint_url:
            return True
        if os.environ.get(f"AWS_ENDPOINT_URL_{service_env_name}") or os.environ.get(
            "AWS_ENDPOINT_URL"
        ):
            return True
        if self._session is not None:
            with contextlib.suppress(Exception):
                scoped = self._session.get_scoped_config()
                if scoped.get("endpoint_url"):
                    return True
        return False

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._session = None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()
