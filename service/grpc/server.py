"""The gRPC door: a grpc.aio server holding both APIs' servicers, health, reflection, the interceptors
(call observation, the token) and the transport's limits, listening where the settings say."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.core.errors import StartupError
from service.grpc.boundary import lenient
from service.grpc.inference import InferenceServicer
from service.grpc.interceptors import AuthInterceptor, ObservingInterceptor
from service.grpc.sentiment import SentimentServicer
from service.ops.sockets import check_port_free

if TYPE_CHECKING:
    from service.calls.layer import Calls
    from service.ops.settings import Settings

SENTIMENT_SERVICE = pb.DESCRIPTOR.services_by_name["SentimentService"]
INFERENCE_SERVICE = inference_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICES = (SENTIMENT_SERVICE.full_name, INFERENCE_SERVICE.full_name)


def generic_handler(servicer: Any, service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    """Handlers for every method of `service`, with deserializers that report malformed input."""
    database = symbol_database.Default()
    handlers = {}
    for method in service.methods:
        request_class = database.GetSymbol(method.input_type.full_name)
        kwargs = {
            "request_deserializer": lenient(request_class),
            "response_serializer": lambda message: message.SerializeToString(),
        }
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour, **kwargs)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(behaviour, **kwargs)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(behaviour, **kwargs)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour, **kwargs)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def transport_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's channel arguments for the server's transport limits."""
    ms = 1000
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", int(settings.reuse_port)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * ms)),
        ("grpc.max_connection_idle_ms", int(settings.idle_timeout_s * ms)),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * ms)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * ms)),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
    ]


def credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    if settings.tls_client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=settings.tls_client_ca_file.read_bytes(), require_client_auth=True
    )


def build_server(
    settings: Settings, calls: Calls, health_servicer: health.aio.HealthServicer
) -> grpc.aio.Server:
    """The server with every service on it, not yet listening (listen())."""
    interceptors: list[grpc.aio.ServerInterceptor] = [ObservingInterceptor(calls.observer)]
    if settings.auth_token is not None:
        interceptors.append(AuthInterceptor(settings.auth_token.get_secret_value()))
    server = grpc.aio.server(interceptors=interceptors, options=transport_options(settings))
    server.add_generic_rpc_handlers(
        [
            generic_handler(SentimentServicer(calls.sentiment), SENTIMENT_SERVICE),
            generic_handler(InferenceServicer(calls.inference, calls.repository), INFERENCE_SERVICE),
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        names = [
            *SERVICES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, server)
    return server


def listen(server: grpc.aio.Server, settings: Settings) -> int:
    """Listen on the settings' address, with TLS when they name its files; the port."""
    chosen = credentials(settings)
    if not settings.reuse_port:  # a worker of --workers joins its group's port on purpose
        check_port_free(settings.host, settings.port)
    if chosen is None:
        port = server.add_insecure_port(settings.address)
    else:
        port = server.add_secure_port(settings.address, chosen)
    if port == 0:
        raise StartupError(
            f"--host {settings.host} --port {settings.port}: could not listen there (in use by another "
            "process, or not an address of this machine)"
        )
    return port
