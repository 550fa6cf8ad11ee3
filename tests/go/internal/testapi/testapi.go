// Package testapi holds what the test programs share: the kube-apiserver-shaped routes every test
// server answers, a request with an optional body, a clean exit on SIGTERM/SIGINT, the listener
// that prints its address, a request log and a TLS server of them all.
//
// Uses only APIs present in Go 1.19, so the programs still build with old and new toolchains.
package testapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Route answers the routes every test server has, and reports whether the path was one of them:
// `/` → 200 "ok\n", `/api/v1/namespaces/{ns}/pods/{name}` → 200 JSON Pod, `/status/{code}` →
// that status (200–599). Dispatches by hand (no 1.22 patterns) to stay buildable by Go 1.19.
func Route(w http.ResponseWriter, r *http.Request) bool {
	path := r.URL.Path
	switch {
	case path == "/":
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	case strings.HasPrefix(path, "/api/v1/namespaces/"):
		// /api/v1/namespaces/{ns}/pods/{name}
		parts := strings.Split(strings.TrimPrefix(path, "/api/v1/namespaces/"), "/")
		if len(parts) != 3 || parts[0] == "" || parts[1] != "pods" || parts[2] == "" {
			http.NotFound(w, r)
			return true
		}
		pod := map[string]interface{}{
			"kind":       "Pod",
			"apiVersion": "v1",
			"metadata":   map[string]string{"name": parts[2], "namespace": parts[0]},
			"status":     map[string]string{"phase": "Running"},
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(pod)
	case strings.HasPrefix(path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(path, "/status/"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "bad status code", http.StatusBadRequest)
			return true
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprintf(w, "%d %s\n", code, http.StatusText(code))
	default:
		return false
	}
	return true
}

// NewRequest is http.NewRequest with `data` as the body, or none when it is empty.
func NewRequest(method, url, data string) (*http.Request, error) {
	var body io.Reader
	if data != "" {
		body = strings.NewReader(data)
	}
	return http.NewRequest(method, url, body)
}

// ShutdownOnSignal shuts `srv` down (5 s for the requests in flight) on SIGTERM or SIGINT, so
// that test harnesses get a 0 exit status.
func ShutdownOnSignal(srv *http.Server) {
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
}

// Listen listens on `addr` (port 0 picks a free port) and prints "listening on ADDR" on stdout, so
// that a test knows the port; `name` prefixes the error it exits with.
func Listen(name, addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("%s: listen: %v", name, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	return ln
}

// LogRequests logs `PROTO METHOD PATH` of each request on stderr before `next` handles it.
func LogRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s %s", r.Proto, r.Method, r.URL.Path)
		next.ServeHTTP(w, r)
	})
}

// ServeTLS serves `handler` (with LogRequests when `verbose`) over TLS with the certificate of
// certFile/keyFile, HTTP/2 and HTTP/1.1 by ALPN, on `addr` (see Listen), then calls `listening`
// (may be nil); it returns once the server is shut down by SIGTERM/SIGINT and exits on any error.
func ServeTLS(name, addr, certFile, keyFile string, handler http.Handler, verbose bool, listening func()) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	if verbose {
		handler = LogRequests(handler)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// NextProtos h2 + http/1.1 is what ServeTLS sets up by default.
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	ln := Listen(name, addr)
	if listening != nil {
		listening()
	}
	ShutdownOnSignal(srv)
	if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
		log.Fatalf("%s: %v", name, err)
	}
}
