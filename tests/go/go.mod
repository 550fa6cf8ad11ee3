// Test programs for the tracer's integration tests. Standard library only, so
// they build offline; the `go` line stays old so Go 1.19 (Debian's golang-go)
// can build them too, giving a second Go version to test against.
module tracer/tests/go

go 1.19
