// The HTTP app of the local cluster's tests (see scripts/build-go-tools.sh).
module k8see.dev/tools/testapp

go 1.24.0
