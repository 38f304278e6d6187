"""gRPC server interceptors: who may call (AccessInterceptor, the rules are in
`net/access.py`), undecodable requests get INVALID_ARGUMENT, and a unary-request
handler may answer with its response already serialized (bytes).

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
    """Wraps every handler's deserializer (see module docstring). Unary-request
    handlers are coroutines (a server stream writes with `context.write`); handlers of
    a stream of requests are async generators. Each
    method's wrapped handler is made once and kept: the registered handlers never
    change while the server runs."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = await continuation(handler_call_details)
        wrapped = _wrap(handler)
        if handler is not None:
            self._wrapped[method] = wrapped
        return wrapped


def _wrap(handler):
    if handler is None or handler.request_deserializer is None:
        return handler
    if handler.request_streaming:
        if not handler.response_streaming:
            return handler
        return handler._replace(
            request_deserializer=_lenient(handler.request_deserializer),
            stream_stream=_refusing_in_stream(handler.stream_stream),
        )
    behaviour_field = "unary_stream" if handler.response_streaming else "unary_unary"
    return handler._replace(
        request_deserializer=_lenient(handler.request_deserializer),
        response_serializer=_passing_bytes(handler.response_serializer),
        **{behaviour_field: _refusing(getattr(handler, behaviour_field))},
    )


def _refusing_in_stream(behaviour):
    """A stream of requests (its handler an async generator) ends with
    INVALID_ARGUMENT at the first request that could not be decoded."""

    async def refuse_malformed(request, context) -> None:
        if isinstance(request, _Malformed):
            await _refuse(request, context)

    return _checking_each(behaviour, refuse_malformed)


def _checking_each(behaviour, check):
    """A stream-stream handler that awaits `check(request, context)` on each request
    before `behaviour` (an async generator) sees it; a check that aborts ends it."""

    async def handle(requests, context):
        async def checked():
            async for request in requests:
                await check(request, context)
                yield request

        async for response in behaviour(checked(), context):
            yield response

    return handle


def _passing_bytes(serialize):
    """A handler may answer with its response already serialized (bytes), e.g. from
    cached parts; anything else is serialized as usual."""
    if serialize is None:
        return None

    def serialize_or_pass(response):
        return response if isinstance(response, bytes) else serialize(response)

    return serialize_or_pass


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call its AccessPolicy refuses (UNAUTHENTICATED or PERMISSION_DENIED,
    with the code in the trailing metadata) before its handler runs; a stream of
    requests is checked as it opens and at each request. Put it first, so
    that it sees the request as the next interceptors pass it on (a malformed one
    included, which is then refused by the handler)."""

    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy
        self._guarded_handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method in self._guarded_handlers:
            return self._guarded_handlers[method]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        guarded = self._guarded_handlers[method] = self._guard(method, handler)
        return guarded

    def _guard(self, method: str, handler):
        """The handler that checks each call first (made once per method)."""
        if not self._policy.knows(method):
            return _refusing_handler(handler, method)
        if self._policy.admits_anyone(method):
            return handler  # no check to make: no wrapper, no caller to look up per call
        if handler.request_streaming:
            if not handler.response_streaming:
                return _refusing_handler(handler, method)
            return handler._replace(
                stream_stream=self._guarded_stream(method, handler.stream_stream)
            )
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

    def _guarded_stream(self, method: str, behaviour):
        """Checks the caller when the stream opens and each request's claims as it
        comes; the first refusal ends the stream."""
        policy = self._policy

        async def handle(requests, context):
            caller = Caller.of(context)

            async def check(request, context) -> None:
                try:
                    policy.check(method, caller, request)
                except JobschedError as error:
                    await _abort(context, error)

            await check(None, context)
            async for response in _checking_each(behaviour, check)(requests, context):
                yield response

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
