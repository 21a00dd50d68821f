"""The gRPC door: servicers that decode, call the call layer and encode, its interceptors, and the
grpc.aio server. It never imports the HTTP door."""
