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
// With -raw, requests are plain HTTP/1.1 written and read by the main
// goroutine itself, one connection each, instead of by net/http's transport
// goroutines. With -stale-handshake D, the main goroutine first starts a TLS
// handshake that fails before any syscall (its deadline has passed), then
// pauses for D: a goroutine that entered a handshake and then did socket I/O
// of another connection.
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
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"time"

	"tracer/tests/go/internal/testapi"
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
	raw := flag.Bool("raw", false, "plain HTTP/1.1 written and read by the main goroutine, a connection per request")
	stale := flag.Duration("stale-handshake", 0, "before the first request, a TLS handshake that fails before any syscall, then this pause")
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

	if *stale > 0 {
		if err := staleHandshake(*url); err != nil {
			log.Fatalf("http-client: stale handshake: %v", err)
		}
		time.Sleep(*stale)
	}
	one := func() error { return doOne(client, *method, *url, *data) }
	if *raw {
		one = func() error { return doRaw(*method, *url, *timeout) }
	}
	failed := 0
	for i := 0; i < *n && !stopped(stop); i++ {
		if i > 0 && *interval > 0 {
			time.Sleep(*interval)
		}
		if err := one(); err != nil {
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
	req, err := testapi.NewRequest(method, url, data)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	return report(resp)
}

// staleHandshake starts a TLS client handshake, on the calling goroutine, on a
// connection to url's host whose deadline has already passed: the handshake
// fails at its first write, before any syscall. The error must be the
// deadline's.
func staleHandshake(url string) error {
	u, err := neturl.Parse(url)
	if err != nil {
		return err
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(-time.Second))
	err = tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).Handshake()
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		return fmt.Errorf("expected a deadline error, got %v", err)
	}
	fmt.Fprintf(os.Stderr, "stale handshake failed: %v\n", err)
	return nil
}

// doRaw sends one bodiless HTTP/1.1 request on a new connection and reads the
// response, both on the calling goroutine.
func doRaw(method, url string, timeout time.Duration) error {
	u, err := neturl.Parse(url)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", u.Host, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: http-client-raw\r\nConnection: close\r\n\r\n", method, u.RequestURI(), u.Host)
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	return report(resp)
}

// report reads the whole body of resp and prints "PROTO STATUS BYTES".
func report(resp *http.Response) error {
	defer resp.Body.Close()
	nbytes, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d %d\n", resp.Proto, resp.StatusCode, nbytes)
	return nil
}
