// Command apiserver is a small stand-in for kube-apiserver: a TLS server (HTTP/1.1 and HTTP/2 by
// ALPN) that answers a few Kubernetes API paths with JSON, as a traced server and as the server of
// real Kubernetes clients (kubectl, client-go programs) in the tracer's integration tests.
//
// Like kube-apiserver, it runs each request's handler in a goroutine of its own and waits for it
// with a deadline (kube-apiserver's timeout filter): the TLS reads and writes of a request then
// happen on other goroutines than its handler's work, as they do in the real server.
//
//	apiserver -addr 127.0.0.1:0 -cert server.pem -key server.key [-pods N] [-v]
//	          [-etcd https://127.0.0.1:2379 -ca ca.pem -etcd-cert client.pem -etcd-key client.key]
//	          [-webhook https://127.0.0.1:PORT -ca ca.pem]
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
// With -etcd (the build with -tags etcd) the pods live in etcd, reached over TLS with a client
// certificate through the Go etcd client on one connection opened at start-up; with -webhook a
// validating admission webhook is asked before each create and update. Then, like kube-apiserver:
//
//	GET    /api/v1/namespaces/NS/pods/NAME   etcd Range of /registry/pods/NS/NAME (in a goroutine of the handler's)
//	GET    /api/v1/namespaces/NS/pods        etcd Range of the prefix /registry/pods/NS/
//	GET    …/pods?watch=true                 etcd Watch of that prefix, events streamed as JSON lines
//	POST   /api/v1/namespaces/NS/pods        webhook POST /validate/NS/NAME over HTTP/2 (in a goroutine of
//	                                         the handler's), then etcd Txn creating /registry/pods/NS/NAME
//	PUT    /api/v1/namespaces/NS/pods/NAME   webhook over HTTP/1.1, then etcd Put
//	DELETE /api/v1/namespaces/NS/pods/NAME   etcd DeleteRange
//	GET    /debug/churn?n=N                  N short-lived goroutines (in batches), then "churned N"
//
// NAME of a create is the body's metadata.name. Without -etcd, creates and updates (given
// -webhook) call the webhook alone. With -etcd, the server first calls every etcd method once
// (Range, Put, Txn, DeleteRange, Watch), then listens, then prints "ready".
//
// Uses only APIs present in Go 1.19 (no 1.22 mux patterns), like the other test programs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
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
	etcdURL := flag.String("etcd", "", "etcd client URL: pods live in etcd (the build with -tags etcd)")
	caFile := flag.String("ca", "", "PEM CA of etcd's and the webhook's certificates")
	etcdCert := flag.String("etcd-cert", "", "PEM client certificate for etcd")
	etcdKey := flag.String("etcd-key", "", "PEM client key for etcd")
	webhookURL := flag.String("webhook", "", "base URL of a validating webhook asked before creates and updates")
	flag.Parse()

	if *certFile == "" || *keyFile == "" {
		log.Fatalf("apiserver: -cert and -key are required")
	}
	api := &kubeAPI{pods: *pods}
	if *etcdURL != "" || *webhookURL != "" {
		if *caFile == "" {
			log.Fatalf("apiserver: -etcd and -webhook need -ca")
		}
	}
	if *webhookURL != "" {
		var err error
		api.webhook, err = newWebhookClient(*webhookURL, *caFile)
		if err != nil {
			log.Fatalf("apiserver: webhook: %v", err)
		}
	}
	if *etcdURL != "" {
		api.store = connectEtcd(*etcdURL, *caFile, *etcdCert, *etcdKey)
	}
	ready := func() {
		fmt.Println("ready")
		os.Stdout.Sync()
	}
	testapi.ServeTLS("apiserver", *addr, *certFile, *keyFile, withTimeout(api, requestTimeout), *verbose, ready)
}

// connectEtcd opens the etcd client (one connection, kept for the server's life) and calls every
// method on it once.
func connectEtcd(url, caFile, certFile, keyFile string) backend {
	if openEtcd == nil {
		log.Fatalf("apiserver: -etcd needs the build with -tags etcd (GOPATH mode, Debian's etcd client sources)")
	}
	tlsConfig, err := clientTLS(caFile, certFile, keyFile)
	if err != nil {
		log.Fatalf("apiserver: etcd TLS: %v", err)
	}
	store, err := openEtcd(url, tlsConfig)
	if err != nil {
		log.Fatalf("apiserver: etcd: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := store.warmUp(ctx); err != nil {
		log.Fatalf("apiserver: etcd warm-up: %v", err)
	}
	return store
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
	pods    int
	store   backend        // nil: the built-in pods
	webhook *webhookClient // nil: no admission
}

func (a *kubeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	var body []byte
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	}
	// Drain any request body so the tracer sees the whole request on the wire.
	io.Copy(io.Discard, r.Body)
	if path == "/debug/churn" {
		churn(w, r)
		return
	}
	if r.Method != http.MethodGet && a.store == nil && a.webhook == nil {
		writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "only GET is served")
		return
	}
	if r.Method == http.MethodGet && discovery(w, path) {
		return
	}
	// /api/v1/namespaces/{ns}/pods[/{name}]
	parts := strings.Split(strings.TrimPrefix(path, "/api/v1/namespaces/"), "/")
	if !strings.HasPrefix(path, "/api/v1/namespaces/") || len(parts) < 2 || len(parts) > 3 || parts[0] == "" ||
		parts[1] != "pods" || (len(parts) == 3 && parts[2] == "") {
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	ns, name := parts[0], ""
	if len(parts) == 3 {
		name = parts[2]
	}
	switch {
	case r.Method == http.MethodGet && name == "" && isWatch(r):
		a.watch(w, r, ns)
	case r.Method == http.MethodGet && name == "":
		a.list(w, r, ns)
	case r.Method == http.MethodGet:
		a.get(w, r, ns, name)
	case r.Method == http.MethodPost && name == "":
		a.create(w, r, ns, body)
	case r.Method == http.MethodPut && name != "":
		a.update(w, r, ns, name, body)
	case r.Method == http.MethodDelete && name != "":
		a.delete(w, r, ns, name)
	default:
		writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not served on "+path)
	}
}

// discovery answers the paths that are not pods; false when path is none of them.
func discovery(w http.ResponseWriter, path string) bool {
	switch path {
	case "/version":
		writeJSON(w, map[string]string{
			"major": "1", "minor": "32", "gitVersion": "v1.32.4", "platform": "linux/amd64",
		})
	case "/api":
		writeJSON(w, map[string]interface{}{"kind": "APIVersions", "versions": []string{"v1"}})
	case "/api/v1":
		writeJSON(w, map[string]interface{}{
			"kind": "APIResourceList", "groupVersion": "v1",
			"resources": []map[string]interface{}{{
				"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
				"verbs": []string{"get", "list"},
			}},
		})
	case "/apis":
		writeJSON(w, map[string]interface{}{"kind": "APIGroupList", "apiVersion": "v1", "groups": []string{}})
	case "/healthz", "/livez", "/readyz":
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	default:
		return false
	}
	return true
}

func isWatch(r *http.Request) bool {
	v := r.URL.Query().Get("watch")
	return v == "true" || v == "1"
}

// watchTimeout is ?timeoutSeconds (default 60, at most 600).
func watchTimeout(r *http.Request) time.Duration {
	secs, err := strconv.Atoi(r.URL.Query().Get("timeoutSeconds"))
	if err != nil || secs <= 0 || secs > 600 {
		secs = 60
	}
	return time.Duration(secs) * time.Second
}

// startStream answers 200 at once and flushes, as a watch does before its first event.
func startStream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
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
