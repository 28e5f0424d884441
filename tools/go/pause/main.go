// Command pause is the local cluster's pod sandbox: it holds a pod's namespaces open and
// does nothing else. It stops on SIGINT or SIGTERM, and reaps children it inherits as PID 1.
//
// With K8SEE_PAUSE_EXIT=<code> it exits with that code at once: tests use it for a container
// that crashes (CrashLoopBackOff) without any other image.
package main

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if code, ok := os.LookupEnv("K8SEE_PAUSE_EXIT"); ok {
		n, err := strconv.Atoi(code)
		if err != nil {
			n = 1
		}
		os.Exit(n)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 8)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
