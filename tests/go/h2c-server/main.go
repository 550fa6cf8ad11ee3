//go:build go1.24

// Command h2c-server is a plain-text HTTP/2 (h2c, prior knowledge) and HTTP/1.1 server used as
// a target by the tracer's integration tests: HTTP/2 without TLS and without gRPC. With -client it
// is an h2c client instead (see runClient): curl 7.88 cannot reuse a prior-knowledge connection
// (curl issue 10634), so tests that need many streams on one h2c connection use this.
//
// It prints "listening on ADDR" on stdout once the socket is bound, so a test can pass
// -addr 127.0.0.1:0 and read the chosen port. Routes (same as https-server):
// `/` → 200 "ok\n", `/api/v1/namespaces/{ns}/pods/{name}` → 200 JSON Pod (any method; a request
// body is read and discarded), `/status/{code}` → that status (200–599), anything else → 404.
//
// Needs Go 1.24+ (http.Server.Protocols with SetUnencryptedHTTP2); the build constraint keeps
// older toolchains from trying.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"time"

	"tracer/tests/go/internal/testapi"
)

// urlList is a repeatable -url flag.
type urlList []string

func (u *urlList) String() string     { return strings.Join(*u, ",") }
func (u *urlList) Set(v string) error { *u = append(*u, v); return nil }

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address (port 0 picks a free port)")
	verbose := flag.Bool("v", false, "log each request on stderr")
	client := flag.Bool("client", false, "be an h2c client instead of a server")
	var urls urlList
	flag.Var(&urls, "url", "client: URL to request (repeatable; %d is replaced by the request index)")
	n := flag.Int("n", 1, "client: how many times to go through the -url list")
	interval := flag.Duration("interval", 0, "client: pause between requests")
	waitStdin := flag.Bool("wait-stdin", false, "client: print `waiting for stdin` on stderr and wait for a line first")
	stopStdin := flag.Bool("stop-stdin", false, "client: stop after the request in flight when a line (or EOF) arrives on stdin")
	method := flag.String("method", "GET", "client: HTTP method")
	data := flag.String("data", "", "client: request body")
	flag.Parse()

	if *client {
		os.Exit(runClient(urls, *n, *interval, *waitStdin, *stopStdin, *method, *data))
	}

	var handler http.Handler = http.HandlerFunc(route)
	if *verbose {
		handler = logRequests(handler)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		Protocols:         &protocols,
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("h2c-server: listen: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()

	testapi.ShutdownOnSignal(srv)

	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatalf("h2c-server: %v", err)
	}
}

func route(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	if !testapi.Route(w, r) {
		http.NotFound(w, r)
	}
}

func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s %s", r.Proto, r.Method, r.URL.Path)
		next.ServeHTTP(w, r)
	})
}

// runClient sends the requests on one h2c connection (prior knowledge, no TLS) and prints
// "PROTO STATUS BYTES LOCALPORT" per response. Returns the exit status: 1 if any request failed.
// With stopStdin it stops early, after the request in flight, when a line arrives on stdin.
func runClient(urls []string, n int, interval time.Duration, waitStdin, stopStdin bool, method, data string) int {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	stdin := bufio.NewReader(os.Stdin)
	if waitStdin {
		fmt.Fprintln(os.Stderr, "waiting for stdin")
		stdin.ReadString('\n')
	}
	stop := make(chan struct{})
	if stopStdin {
		go func() {
			stdin.ReadString('\n')
			close(stop)
		}()
	}
	failed := 0
	i := 0
requests:
	for round := 0; round < n; round++ {
		for _, u := range urls {
			select {
			case <-stop:
				break requests
			default:
			}
			if i > 0 && interval > 0 {
				time.Sleep(interval)
			}
			if strings.Contains(u, "%d") {
				u = strings.ReplaceAll(u, "%d", strconv.Itoa(i))
			}
			if err := clientDo(c, method, u, data); err != nil {
				log.Printf("h2c client: request %d: %v", i, err)
				failed++
			}
			i++
		}
	}
	tr.CloseIdleConnections()
	if failed > 0 {
		return 1
	}
	return 0
}

func clientDo(c *http.Client, method, url, data string) error {
	req, err := testapi.NewRequest(method, url, data)
	if err != nil {
		return err
	}
	localPort := 0
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if a, ok := info.Conn.LocalAddr().(*net.TCPAddr); ok {
			localPort = a.Port
		}
	}}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	nbytes, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d %d %d\n", resp.Proto, resp.StatusCode, nbytes, localPort)
	return nil
}
