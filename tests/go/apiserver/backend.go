package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// backend is where the pods live when the server is given -etcd: real etcd through the Go etcd
// client (etcd.go, built with -tags etcd, GOPATH mode with Debian's Go sources). Each method is one
// etcd call on the connection opened at start-up, named after the etcd RPC it makes.
type backend interface {
	// Range of one key: the stored value, or found=false.
	get(ctx context.Context, key string) (value []byte, found bool, err error)
	// Range of a prefix: the values.
	list(ctx context.Context, prefix string) ([][]byte, error)
	// Txn: put key only if it does not exist yet (kube-apiserver's create); created=false if it did.
	create(ctx context.Context, key string, value []byte) (created bool, err error)
	// Put (an update).
	update(ctx context.Context, key string, value []byte) error
	// DeleteRange of one key: how many were deleted.
	delete(ctx context.Context, key string) (int64, error)
	// Watch of a prefix until ctx ends; each event's value goes to send.
	watch(ctx context.Context, prefix string, send func([]byte)) error
	// One call of every method above (and an opened-then-cancelled watch), so that the connection
	// has carried each of them before any tracer attaches.
	warmUp(ctx context.Context) error
}

// openEtcd is set by etcd.go when the binary is built with -tags etcd; nil in the standard-library
// build.
var openEtcd func(endpoint string, tlsConfig *tls.Config) (backend, error)

// clientTLS trusts caFile (and presents certFile/keyFile when given): the client side of etcd and
// of the webhook.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
