// Command apiserver is a small stand-in for kube-apiserver: a TLS server (HTTP/1.1 and HTTP/2 by
// ALPN) that answers a few Kubernetes API paths with JSON, as a traced server and as the server of
// real Kubernetes clients (kubectl, client-go programs) in the tracer's integration tests.
//
// Like kube-apiserver, it runs each request's handler in a goroutine of its own and waits for it
// with a deadline (kube-apiserver's timeout filter): the TLS reads and writes of a request then
// happen on other goroutines than its handler's work, as they do in the real server.
//
//	apiserver -addr 127.0.0.1:0 -cert server.pem -key server.key [-pods N] [-v]
//
// prints "listening on ADDR" on stdout once the socket is bound. The certificate is the tests' (a
// CA of their own signs it), so that clients verify it as they would a real API server's.
//
// Every namespace holds the pods pod-0 … pod-(N-1) (-pods, default 100); other names answer 404
// with a Kubernetes Status, as kube-apiserver does. Paths:
//
//	/version                                 build information (JSON)
//	/api                                     APIVersions: v1
//	/api/v1                                  APIResourceList: pods
//	/apis                                    APIGroupList: none
//	/api/v1/namespaces/NS/pods               PodList of NS
//	/api/v1/namespaces/NS/pods?watch=true    a watch: no events, ended after ?timeoutSeconds=S (default 60)
//	/api/v1/namespaces/NS/pods/NAME          Pod NAME of NS, or 404
//	/healthz, /livez, /readyz                "ok"
//
// Uses only APIs present in Go 1.19 (no 1.22 mux patterns), like the other test programs.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tracer/tests/go/internal/testapi"
)

// requestTimeout is kube-apiserver's default --request-timeout.
const requestTimeout = 60 * time.Second

func main() {
	addr := flag.String("addr", "127.0.0.1:6443", "listen address (port 0 picks a free port)")
	certFile := flag.String("cert", "", "PEM certificate file (required)")
	keyFile := flag.String("key", "", "PEM private key file (required)")
	pods := flag.Int("pods", 100, "pods per namespace: pod-0 … pod-(N-1)")
	verbose := flag.Bool("v", false, "log each request on stderr")
	flag.Parse()

	if *certFile == "" || *keyFile == "" {
		log.Fatalf("apiserver: -cert and -key are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("apiserver: %v", err)
	}
	api := &kubeAPI{pods: *pods}
	var handler http.Handler = withTimeout(api, requestTimeout)
	if *verbose {
		handler = testapi.LogRequests(handler)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// NextProtos h2 + http/1.1 is what ServeTLS sets up by default.
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	ln := testapi.Listen("apiserver", *addr)
	testapi.ShutdownOnSignal(srv)
	if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
		log.Fatalf("apiserver: %v", err)
	}
}

// withTimeout runs each request's handler in a child goroutine and waits for it at most `d`, then
// answers 504 (kube-apiserver's timeout filter does the same). The handler writes into a buffer, so
// a late handler cannot write after the timeout's answer. Watches are long-running: exempt, as in
// kube-apiserver.
func withTimeout(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWatch(r) {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		done := make(chan struct{})
		go func() {
			defer close(done)
			next.ServeHTTP(rec, r)
		}()
		select {
		case <-done:
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(rec.body)))
			w.WriteHeader(rec.status)
			w.Write(rec.body)
		case <-time.After(d):
			writeStatus(w, http.StatusGatewayTimeout, "Timeout", "request did not complete within the allowed duration")
		}
	})
}

// recorder is the ResponseWriter of a handler running under withTimeout.
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(b []byte) (int, error) { r.body = append(r.body, b...); return len(b), nil }

// kubeAPI answers the Kubernetes paths of the package comment.
type kubeAPI struct {
	pods int
}

func (a *kubeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Drain any request body so the tracer sees the whole request on the wire.
	io.Copy(io.Discard, r.Body)
	path := strings.TrimSuffix(r.URL.Path, "/")
	if r.Method != http.MethodGet {
		writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "only GET is served")
		return
	}
	switch path {
	case "/version":
		writeJSON(w, map[string]string{
			"major": "1", "minor": "32", "gitVersion": "v1.32.4", "platform": "linux/amd64",
		})
		return
	case "/api":
		writeJSON(w, map[string]interface{}{"kind": "APIVersions", "versions": []string{"v1"}})
		return
	case "/api/v1":
		writeJSON(w, map[string]interface{}{
			"kind": "APIResourceList", "groupVersion": "v1",
			"resources": []map[string]interface{}{{
				"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
				"verbs": []string{"get", "list"},
			}},
		})
		return
	case "/apis":
		writeJSON(w, map[string]interface{}{"kind": "APIGroupList", "apiVersion": "v1", "groups": []string{}})
		return
	case "/healthz", "/livez", "/readyz":
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
		return
	}
	// /api/v1/namespaces/{ns}/pods[/{name}]
	parts := strings.Split(strings.TrimPrefix(path, "/api/v1/namespaces/"), "/")
	if !strings.HasPrefix(path, "/api/v1/namespaces/") || len(parts) < 2 || parts[0] == "" || parts[1] != "pods" {
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	ns := parts[0]
	switch {
	case len(parts) == 2 && isWatch(r):
		watch(w, r)
	case len(parts) == 2:
		items := make([]interface{}, 0, a.pods)
		for i := 0; i < a.pods; i++ {
			items = append(items, pod(ns, "pod-"+strconv.Itoa(i)))
		}
		writeJSON(w, map[string]interface{}{"kind": "PodList", "apiVersion": "v1", "items": items})
	case len(parts) == 3 && a.hasPod(parts[2]):
		writeJSON(w, pod(ns, parts[2]))
	case len(parts) == 3:
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("pods %q not found", parts[2]))
	default:
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
	}
}

func isWatch(r *http.Request) bool {
	v := r.URL.Query().Get("watch")
	return v == "true" || v == "1"
}

// watch answers a watch that sees no events: the response starts at once and ends after
// ?timeoutSeconds (default 60, at most 600), or when the client goes away.
func watch(w http.ResponseWriter, r *http.Request) {
	secs, err := strconv.Atoi(r.URL.Query().Get("timeoutSeconds"))
	if err != nil || secs <= 0 || secs > 600 {
		secs = 60
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	select {
	case <-time.After(time.Duration(secs) * time.Second):
	case <-r.Context().Done():
	}
}

func (a *kubeAPI) hasPod(name string) bool {
	n, err := strconv.Atoi(strings.TrimPrefix(name, "pod-"))
	return strings.HasPrefix(name, "pod-") && err == nil && n >= 0 && n < a.pods && strconv.Itoa(n) == name[4:]
}

func pod(ns, name string) map[string]interface{} {
	return map[string]interface{}{
		"kind": "Pod", "apiVersion": "v1",
		"metadata": map[string]string{"name": name, "namespace": ns},
		"status":   map[string]string{"phase": "Running"},
	}
}

func writeJSON(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// writeStatus answers with a Kubernetes Status object, as kube-apiserver does for errors.
func writeStatus(w http.ResponseWriter, code int, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]interface{}{
		"kind": "Status", "apiVersion": "v1", "status": "Failure",
		"message": message, "reason": reason, "code": code,
	})
}
