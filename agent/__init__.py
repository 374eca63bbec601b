"""The on-device agent: a light gRPC server that stores artifacts and runs them with real runtimes.

Never imports `host`; starts with only grpcio, protobuf and numpy installed.
"""

__version__ = "0.1.0"
