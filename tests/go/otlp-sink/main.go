//go:build go1.24

// Command otlp-sink is the OTLP receiver of the tracer's benchmark: it accepts trace exports over
// gRPC (h2c) and OTLP/HTTP (protobuf) on one port, counts the spans in each, and answers success.
// It keeps nothing else, so that its own CPU stays small next to the servers being measured; a
// real collector would run elsewhere or cost more.
//
// Requests compressed with gzip (gRPC message compression, or Content-Encoding: gzip) are
// inflated first.
//
// It prints "listening on ADDR" on stdout once the socket is bound. GET /stats answers
// "exports=N spans=N bytes=N gzipped=N malformed=N": what it received so far (bytes as sent,
// compressed or not).
//
// Needs Go 1.24+ (http.Server.Protocols with SetUnencryptedHTTP2).
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
)

const grpcExport = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

var exports, spans, bytesIn, gzipped, malformed atomic.Uint64

// Request buffers are reused: growing a fresh one for every export of a few hundred KiB cost
// more CPU than the rest of the sink.
var buffers = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 1<<20)) }}

// readBody reads the whole request body into a pooled buffer; put it back with buffers.Put.
func readBody(r *http.Request) (*bytes.Buffer, error) {
	buf := buffers.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(r.Body)
	return buf, err
}

func main() {
	addr := flag.String("addr", "127.0.0.1:4317", "listen address (port 0 picks a free port)")
	flag.Parse()

	mux := http.NewServeMux()
	// Paths without methods: the module's go line (1.19) keeps the mux of Go 1.21.
	mux.HandleFunc(grpcExport, exportGrpc)
	mux.HandleFunc("/v1/traces", exportHTTP)
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "exports=%d spans=%d bytes=%d gzipped=%d malformed=%d\n",
			exports.Load(), spans.Load(), bytesIn.Load(), gzipped.Load(), malformed.Load())
	})
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	log.Fatal(srv.Serve(ln))
}

// exportGrpc answers a gRPC unary call: one length-prefixed message in, an empty
// ExportTraceServiceResponse (a zero-length message) and grpc-status 0 out.
func exportGrpc(w http.ResponseWriter, r *http.Request) {
	buf, err := readBody(r)
	defer buffers.Put(buf)
	if err != nil {
		return
	}
	body := buf.Bytes()
	bytesIn.Add(uint64(len(body)))
	if len(body) < 5 || body[0] > 1 || int(be32(body[1:5])) != len(body)-5 {
		malformed.Add(1)
	} else if body[0] == 1 && r.Header.Get("Grpc-Encoding") == "gzip" {
		gunzipAndCount(body[5:])
	} else if body[0] == 0 {
		count(body[5:])
	} else {
		malformed.Add(1) // compressed without a known encoding
	}
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte{0, 0, 0, 0, 0})
	w.Header().Set("Grpc-Status", "0")
}

// exportHTTP answers OTLP/HTTP: an ExportTraceServiceRequest in, an empty response out.
func exportHTTP(w http.ResponseWriter, r *http.Request) {
	buf, err := readBody(r)
	defer buffers.Put(buf)
	if err != nil {
		return
	}
	bytesIn.Add(uint64(buf.Len()))
	if r.Header.Get("Content-Encoding") == "gzip" {
		gunzipAndCount(buf.Bytes())
	} else {
		count(buf.Bytes())
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// gunzipAndCount inflates a gzip-compressed ExportTraceServiceRequest and counts it.
func gunzipAndCount(compressed []byte) {
	gzipped.Add(1)
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		malformed.Add(1)
		return
	}
	plain := buffers.Get().(*bytes.Buffer)
	defer buffers.Put(plain)
	plain.Reset()
	if _, err := plain.ReadFrom(zr); err != nil {
		malformed.Add(1)
		return
	}
	count(plain.Bytes())
}

// count adds the spans of one ExportTraceServiceRequest:
// resource_spans (1) → scope_spans (2) → spans (2).
func count(req []byte) {
	exports.Add(1)
	n := uint64(0)
	ok := fields(req, 1, func(rs []byte) bool {
		return fields(rs, 2, func(ss []byte) bool {
			return fields(ss, 2, func([]byte) bool { n++; return true })
		})
	})
	if !ok {
		malformed.Add(1)
	}
	spans.Add(n)
}

// fields calls f on each length-delimited field `want` of the protobuf message b and skips the
// rest; false if b is not well-formed protobuf.
func fields(b []byte, want uint64, f func([]byte) bool) bool {
	for len(b) > 0 {
		key, n := varint(b)
		if n == 0 {
			return false
		}
		b = b[n:]
		switch key & 7 {
		case 0:
			_, n = varint(b)
			if n == 0 {
				return false
			}
			b = b[n:]
		case 1:
			if len(b) < 8 {
				return false
			}
			b = b[8:]
		case 5:
			if len(b) < 4 {
				return false
			}
			b = b[4:]
		case 2:
			l, n := varint(b)
			if n == 0 || uint64(len(b)-n) < l {
				return false
			}
			v := b[n : n+int(l)]
			b = b[n+int(l):]
			if key>>3 == want && !f(v) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// varint decodes a protobuf varint; n is 0 when b does not hold a whole one.
func varint(b []byte) (v uint64, n int) {
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
