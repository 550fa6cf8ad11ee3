// Command apiload sends a list of API requests to a server with a given concurrency, over HTTP/2
// and HTTP/1.1 (one client each), the load of the tracer's trace tests.
//
//	apiload -base https://127.0.0.1:PORT -ca ca.pem [-c 16] < requests
//
// Each line of stdin is one request: `METHOD PATH PROTO [TRACEPARENT]`, PROTO `h1` or `h2`. A POST
// sends a pod named `p` (metadata.name), a PUT a pod named after the path's last segment. Prints
// `STATUS PROTO METHOD PATH` per response (`ERR - METHOD PATH: error` for a failure); exits 1 if
// any request failed or answered 5xx.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
)

type request struct {
	method, path, proto, traceparent string
}

func main() {
	base := flag.String("base", "", "server URL (https://127.0.0.1:PORT)")
	caFile := flag.String("ca", "", "PEM CA of the server's certificate")
	concurrency := flag.Int("c", 1, "requests in flight")
	flag.Parse()
	if *base == "" || *caFile == "" || *concurrency < 1 {
		log.Fatalf("apiload: -base and -ca are required, -c at least 1")
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("apiload: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		log.Fatalf("apiload: %s: no PEM certificate", *caFile)
	}
	h2 := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: *concurrency,
	}}
	h1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: *concurrency,
	}}
	var reqs []request
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 || (f[2] != "h1" && f[2] != "h2") {
			log.Fatalf("apiload: bad line %q: want METHOD PATH h1|h2 [TRACEPARENT]", sc.Text())
		}
		r := request{method: f[0], path: f[1], proto: f[2]}
		if len(f) > 3 {
			r.traceparent = f[3]
		}
		reqs = append(reqs, r)
	}
	work := make(chan request)
	var mu sync.Mutex
	failed := false
	var wg sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				client := h1
				if r.proto == "h2" {
					client = h2
				}
				line, ok := send(client, *base, r)
				mu.Lock()
				fmt.Println(line)
				failed = failed || !ok
				mu.Unlock()
			}
		}()
	}
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	if failed {
		os.Exit(1)
	}
}

func send(client *http.Client, base string, r request) (string, bool) {
	var body io.Reader
	switch r.method {
	case http.MethodPost:
		body = strings.NewReader(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}}`)
	case http.MethodPut:
		name := r.path[strings.LastIndex(r.path, "/")+1:]
		body = strings.NewReader(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"` + name + `"}}`)
	}
	req, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		return fmt.Sprintf("ERR - %s %s: %v", r.method, r.path, err), false
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.traceparent != "" {
		req.Header.Set("traceparent", r.traceparent)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Sprintf("ERR - %s %s: %v", r.method, r.path, err), false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return fmt.Sprintf("%d %s %s %s", resp.StatusCode, resp.Proto, r.method, r.path), resp.StatusCode < 500
}
