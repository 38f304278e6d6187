"""gRPC server interceptors: undecodable requests get INVALID_ARGUMENT.

grpcio answers a request its deserializer rejects (e.g. a string field holding invalid
UTF-8) with INTERNAL. jobsched promises INVALID_ARGUMENT for bad input, so the
deserializer is wrapped: a request that cannot be parsed reaches the handler as a
marker and is refused there, before anything is proposed.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from jobsched.errors import InvalidArgument
from jobsched.net import metadata


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
