// Command http-client sends a bounded number of HTTP(S) requests; the tracer's
// integration tests use it as a client-side uprobe target (crypto/tls Write
// carries the request, Read the response).
//
// With -wait-stdin it prints "waiting for stdin" on stderr and blocks until a
// line (or EOF) arrives, so a test can start it, attach probes to its PID and
// then let it go. With -stop-stdin it goes on until a line (or EOF) arrives on
// stdin, then stops after the request in flight (at most -n requests): a test
// can keep a connection busy for as long as an attach takes. Each response is
// reported on stdout as "PROTO STATUS BYTES" (e.g. "HTTP/2.0 200 3"). Exits 1
// if any request failed.
//
// Uses only APIs present in Go 1.19 so old and new toolchains can build it.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	url := flag.String("url", "https://127.0.0.1:8443/", "URL to request")
	n := flag.Int("n", 1, "number of requests")
	interval := flag.Duration("interval", 0, "pause between requests")
	http2 := flag.Bool("http2", true, "offer h2 in TLS ALPN (server picks); false forces HTTP/1.1")
	insecure := flag.Bool("insecure", false, "skip TLS certificate verification")
	waitStdin := flag.Bool("wait-stdin", false, "wait for a line on stdin before the first request")
	stopStdin := flag.Bool("stop-stdin", false, "stop after the request in flight when a line arrives on stdin")
	method := flag.String("method", "GET", "HTTP method")
	data := flag.String("data", "", "request body")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	flag.Parse()

	tr := &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure},
		// A custom TLSClientConfig turns h2 off unless forced back on.
		ForceAttemptHTTP2: *http2,
	}
	if !*http2 {
		// A non-nil empty map is the documented way to disable h2.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: tr, Timeout: *timeout}

	stdin := bufio.NewReader(os.Stdin)
	if *waitStdin {
		fmt.Fprintln(os.Stderr, "waiting for stdin")
		stdin.ReadString('\n') // EOF also releases us
	}
	stop := make(chan struct{})
	if *stopStdin {
		go func() {
			stdin.ReadString('\n') // EOF also stops us
			close(stop)
		}()
	}

	failed := 0
	for i := 0; i < *n && !stopped(stop); i++ {
		if i > 0 && *interval > 0 {
			time.Sleep(*interval)
		}
		if err := doOne(client, *method, *url, *data); err != nil {
			log.Printf("http-client: request %d: %v", i+1, err)
			failed++
		}
	}
	tr.CloseIdleConnections()
	if failed > 0 {
		os.Exit(1)
	}
}

func stopped(stop chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func doOne(client *http.Client, method, url, data string) error {
	var body io.Reader
	if data != "" {
		body = strings.NewReader(data)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	nbytes, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d %d\n", resp.Proto, resp.StatusCode, nbytes)
	return nil
}
