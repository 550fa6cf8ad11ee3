// Command webhook is a validating admission webhook for the API-server-like test server
// (tests/go/apiserver -webhook): a TLS server (HTTP/2 and HTTP/1.1 by ALPN) that answers
// POST /validate/NS/NAME with an AdmissionReview allowing the request, after -delay.
//
//	webhook -addr 127.0.0.1:0 -cert server.pem -key server.key [-delay 5ms] [-v]
//
// prints "listening on ADDR" on stdout once the socket is bound; exits 0 on SIGTERM/SIGINT. `-v`
// logs `PROTO METHOD PATH` per request on stderr.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	"tracer/tests/go/internal/testapi"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	certFile := flag.String("cert", "", "PEM certificate file (required)")
	keyFile := flag.String("key", "", "PEM private key file (required)")
	delay := flag.Duration("delay", 0, "how long each review takes (a slow webhook)")
	verbose := flag.Bool("v", false, "log each request on stderr")
	flag.Parse()
	if *certFile == "" || *keyFile == "" {
		log.Fatalf("webhook: -cert and -key are required")
	}
	testapi.ServeTLS("webhook", *addr, *certFile, *keyFile, &reviewer{delay: *delay}, *verbose, nil)
}

type reviewer struct {
	delay time.Duration
}

func (v *reviewer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/validate/") {
		http.NotFound(w, r)
		return
	}
	var review struct {
		Request struct {
			UID string `json:"uid"`
		} `json:"request"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	if v.delay > 0 {
		time.Sleep(v.delay)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]interface{}{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"response": map[string]interface{}{"uid": review.Request.UID, "allowed": true},
	})
}
