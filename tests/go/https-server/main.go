// Command https-server is a tiny net/http + crypto/tls server used as a
// uprobe target by the tracer's integration tests. It speaks HTTP/1.1 and
// HTTP/2 (chosen by TLS ALPN, Go's default) and mimics a few kube-apiserver
// shaped paths.
//
// It prints "listening on ADDR" on stdout once the socket is bound, so a test
// can pass -addr 127.0.0.1:0 and read the chosen port. Without -cert/-key it
// uses a fresh self-signed certificate for 127.0.0.1, ::1 and localhost.
//
// Uses only APIs present in Go 1.19 (no 1.22 mux patterns), so the same
// source builds with old and new toolchains.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"tracer/tests/go/internal/testapi"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address (port 0 picks a free port)")
	certFile := flag.String("cert", "", "PEM certificate file (default: self-signed)")
	keyFile := flag.String("key", "", "PEM private key file (default: self-signed)")
	verbose := flag.Bool("v", false, "log each request on stderr")
	wrap := flag.Bool("wrap", false, "wrap each accepted connection in another net.Conn type (as proxy or limit listeners do)")
	flag.Parse()

	cert, err := loadCert(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("https-server: %v", err)
	}

	var handler http.Handler = http.HandlerFunc(route)
	if *verbose {
		handler = logRequests(handler)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// NextProtos h2 + http/1.1 is what ServeTLS sets up by default.
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("https-server: listen: %v", err)
	}
	if *wrap {
		ln = wrappingListener{ln}
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()

	// Exit cleanly on SIGTERM/SIGINT so test harnesses get a 0 exit status.
	testapi.ShutdownOnSignal(srv)

	if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
		log.Fatalf("https-server: %v", err)
	}
}

// route answers the shared routes (testapi.Route) and this server's own, dispatched by hand (no
// 1.22 patterns) to stay buildable by Go 1.19.
func route(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	// Drain any request body so the tracer sees the whole request on the wire.
	io.Copy(io.Discard, r.Body)
	if testapi.Route(w, r) {
		return
	}

	switch {
	case strings.HasPrefix(path, "/bytes/"):
		// N bytes of 'x', with a Content-Length: bodies larger than a TLS record.
		n, err := strconv.Atoi(strings.TrimPrefix(path, "/bytes/"))
		if err != nil || n < 0 || n > 64<<20 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := strings.Repeat("x", 32<<10)
		for n > 0 {
			k := len(chunk)
			if n < k {
				k = n
			}
			if _, err := io.WriteString(w, chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	case strings.HasPrefix(path, "/deep/"):
		// HTTP/1.1 only: the response is written raw on the hijacked connection, n frames down.
		n, err := strconv.Atoi(strings.TrimPrefix(path, "/deep/"))
		hj, ok := w.(http.Hijacker)
		if err != nil || n < 0 || n > 10000 || !ok {
			http.Error(w, "bad depth, or not HTTP/1.1", http.StatusBadRequest)
			return
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		deepWrite(conn, n)
	default:
		http.NotFound(w, r)
	}
}

// deepWrite writes a whole response with one conn.Write (crypto/tls.(*Conn).Write) n small
// frames (48 bytes each) down, with nothing else called at that depth before it: as n grows, the
// depth at which Write starts moves by less than Write's own stack check covers, so for some n it
// is Write's prologue that finds the goroutine's stack too small, and morestack restarts Write
// from its entry after growing the stack.
//
//go:noinline
func deepWrite(conn net.Conn, n int) int {
	if n > 0 {
		return deepWrite(conn, n-1) + 1
	}
	// No Content-Length: the body ends with the connection, so a reader that got the same Write
	// twice sees a longer body rather than a second response.
	conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\ndeep\n"))
	return 0
}

func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s %s", r.Proto, r.Method, r.URL.Path)
		next.ServeHTTP(w, r)
	})
}

func loadCert(certFile, keyFile string) (tls.Certificate, error) {
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return tls.Certificate{}, fmt.Errorf("-cert and -key must be given together")
		}
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	return selfSigned()
}

// selfSigned makes a throwaway ECDSA certificate so tests need no key files.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "https-server test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// wrappingListener hands out connections that are not *net.TCPConn, so a tracer cannot find the
// socket under a tls.Conn by following a *net.TCPConn.
type wrappingListener struct{ net.Listener }

type wrappedConn struct {
	net.Conn
	accepted time.Time
}

func (l wrappingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wrappedConn{Conn: c, accepted: time.Now()}, nil
}
