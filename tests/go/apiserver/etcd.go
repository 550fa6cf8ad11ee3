//go:build etcd

package main

// The etcd backend: built only with -tags etcd, in GOPATH mode with Debian's Go 1.19 and the Go
// sources of golang-etcd-server-dev and golang-google-grpc-dev (etcd 3.4's clientv3 over grpc-go
// 1.33), the client kube-apiserver itself links.

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"go.etcd.io/etcd/clientv3"
	"google.golang.org/grpc/metadata"
)

func init() {
	openEtcd = func(endpoint string, tlsConfig *tls.Config) (backend, error) {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{endpoint},
			DialTimeout: 10 * time.Second,
			TLS:         tlsConfig,
		})
		if err != nil {
			return nil, err
		}
		return &etcdBackend{c: c}, nil
	}
}

type etcdBackend struct {
	c *clientv3.Client
}

func (e *etcdBackend) get(ctx context.Context, key string) ([]byte, bool, error) {
	resp, err := e.c.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, false, err
	}
	return resp.Kvs[0].Value, true, nil
}

func (e *etcdBackend) list(ctx context.Context, prefix string) ([][]byte, error) {
	resp, err := e.c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, kv.Value)
	}
	return out, nil
}

func (e *etcdBackend) create(ctx context.Context, key string, value []byte) (bool, error) {
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (e *etcdBackend) update(ctx context.Context, key string, value []byte) error {
	_, err := e.c.Put(ctx, key, string(value))
	return err
}

func (e *etcdBackend) delete(ctx context.Context, key string) (int64, error) {
	resp, err := e.c.Delete(ctx, key)
	if err != nil {
		return 0, err
	}
	return resp.Deleted, nil
}

func (e *etcdBackend) watch(ctx context.Context, prefix string, send func([]byte)) error {
	// clientv3 shares one gRPC Watch stream between the watches of contexts with the same
	// metadata: metadata of its own gives each request its own stream, so that a stream's
	// creation belongs to exactly one API request (the tests' ground truth).
	ctx = metadata.AppendToOutgoingContext(ctx, "watch-prefix", prefix)
	for resp := range e.c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify()) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			send(ev.Kv.Value)
		}
	}
	return nil
}

func (e *etcdBackend) warmUp(ctx context.Context) error {
	const key = "/registry/warmup/default/warmup"
	if _, err := e.create(ctx, key, []byte("{}")); err != nil {
		return fmt.Errorf("Txn: %w", err)
	}
	if err := e.update(ctx, key, []byte("{}")); err != nil {
		return fmt.Errorf("Put: %w", err)
	}
	if _, _, err := e.get(ctx, key); err != nil {
		return fmt.Errorf("Range: %w", err)
	}
	if _, err := e.list(ctx, "/registry/warmup/"); err != nil {
		return fmt.Errorf("Range (prefix): %w", err)
	}
	if _, err := e.delete(ctx, key); err != nil {
		return fmt.Errorf("DeleteRange: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := e.c.Watch(wctx, "/registry/warmup/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case resp := <-w:
		if !resp.Created {
			return fmt.Errorf("Watch: no creation notice: %v", resp.Err())
		}
	case <-time.After(10 * time.Second):
		return fmt.Errorf("Watch: not created within 10 s")
	}
	return nil
}
