// Command testapp is the app the local cluster's tests deploy when they need a pod that
// answers HTTP: no image host is reachable from the test machines, so it is built here and
// imported into the node as an image.
//
// It listens on $PORT (default 8080) and answers every path with $STATUS (default 200) and a
// small JSON body (none for 204), and logs each request as `request METHOD URI`. With $EXIT_CODE set it exits at once with that code, for a
// container that crash-loops.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
)

func main() {
	if code, ok := os.LookupEnv("EXIT_CODE"); ok {
		n, err := strconv.Atoi(code)
		if err != nil {
			n = 1
		}
		fmt.Fprintln(os.Stderr, "testapp: exiting with", n, "as EXIT_CODE asks")
		os.Exit(n)
	}
	status := 200
	if value := os.Getenv("STATUS"); value != "" {
		if n, err := strconv.Atoi(value); err == nil {
			status = n
		}
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// One line per request, so a test can read from the pod's log what reached it.
		fmt.Printf("request %s %s\n", r.Method, r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status != http.StatusNoContent {
			fmt.Fprintf(w, "{\"path\": %q, \"status\": %d}\n", r.URL.Path, status)
		}
	})
	fmt.Println("testapp: listening on :" + port)
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}
