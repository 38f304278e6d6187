"""gRPC server interceptors: who may call (AccessInterceptor, the rules are in
`net/access.py`), and undecodable requests get INVALID_ARGUMENT.

grpcio answers a request its deserializer rejects (e.g. a string field holding invalid
UTF-8) with INTERNAL. jobsched promises INVALID_ARGUMENT for bad input, so the
deserializer is wrapped: a request that cannot be parsed reaches the handler as a
marker and is refused there, before anything is proposed.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from jobsched.errors import InvalidArgument, JobschedError, PermissionDenied
from jobsched.net import metadata
from jobsched.net.access import AccessPolicy, Caller


class _Malformed:
    """Stands for a request that could not be decoded."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _lenient(deserialize):
    def parse(data: bytes):
        try:
            return deserialize(data)
        except DecodeError as error:
            return _Malformed(str(error))

    return parse


async def _refuse(request: _Malformed, context) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Malformed request: {request.reason}",
        ((metadata.ERROR_CODE, InvalidArgument.code),),
    )


def _refusing(behaviour):
    async def handle(request, context):
        if isinstance(request, _Malformed):
            await _refuse(request, context)
        return await behaviour(request, context)

    return handle


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-request handler's deserializer (see module docstring). The
    handlers are coroutines (a server stream writes with `context.write`)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        behaviour_field = "unary_stream" if handler.response_streaming else "unary_unary"
        return handler._replace(
            request_deserializer=_lenient(handler.request_deserializer),
            **{behaviour_field: _refusing(getattr(handler, behaviour_field))},
        )


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call its AccessPolicy refuses (UNAUTHENTICATED or PERMISSION_DENIED,
    with the code in the trailing metadata) before its handler runs. Put it first, so
    that it sees the request as the next interceptors pass it on (a malformed one
    included, which is then refused by the handler)."""

    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.request_streaming or not self._policy.knows(method):
            return _refusing_handler(handler, method)
        behaviour_field = "unary_stream" if handler.response_streaming else "unary_unary"
        return handler._replace(
            **{behaviour_field: self._guarded(method, getattr(handler, behaviour_field))}
        )

    def _guarded(self, method: str, behaviour):
        policy = self._policy

        async def handle(request, context):
            try:
                policy.check(method, Caller.of(context), request)
            except JobschedError as error:
                await _abort(context, error)
            return await behaviour(request, context)

        return handle


async def _abort(context, error: JobschedError) -> None:
    status = (
        grpc.StatusCode.PERMISSION_DENIED
        if isinstance(error, PermissionDenied)
        else grpc.StatusCode.UNAUTHENTICATED
    )
    await context.abort(status, error.message, ((metadata.ERROR_CODE, error.code),))


def _refusing_handler(handler, method: str):
    """A handler of the same shape that refuses every call (a method no rule covers)."""
    refusal = PermissionDenied(f"Permission denied: no access rule for {method}")

    async def refuse(request_or_iterator, context):
        await _abort(context, refusal)

    kind = (
        ("stream" if handler.request_streaming else "unary")
        + "_"
        + ("stream" if handler.response_streaming else "unary")
    )
    return handler._replace(**{kind: refuse})
