module github.com/agentmesh/agentmesh/examples/polyglot/go

go 1.24.0

require (
	github.com/agentmesh/agentmesh/sdk/go v0.0.0
	google.golang.org/grpc v1.79.3
)

require (
	golang.org/x/net v0.48.0 // indirect
	golang.org/x/sys v0.39.0 // indirect
	golang.org/x/text v0.32.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20251202230838-ff82c1b0f217 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// A program outside the repository drops this line and requires a released version.
replace github.com/agentmesh/agentmesh/sdk/go => ../../../sdk/go
