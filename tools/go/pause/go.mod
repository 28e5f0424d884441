// The local cluster's pause image (see scripts/build-go-tools.sh).
module k8see.dev/tools/pause

go 1.24.0
