package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// webhookClient calls a validating admission webhook at POST BASE/validate/NS/NAME, over HTTP/2 or
// HTTP/1.1 (net/http's transport writes HTTP/1 requests from its write-loop goroutine and HTTP/2
// ones from a goroutine per request: both are what an apiserver's webhook calls look like).
type webhookClient struct {
	base  string
	http2 *http.Client
	http1 *http.Client
}

func newWebhookClient(base, caFile string) (*webhookClient, error) {
	cfg, err := clientTLS(caFile, "", "")
	if err != nil {
		return nil, err
	}
	h2 := &http.Transport{TLSClientConfig: cfg.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	// A non-nil empty TLSNextProto turns HTTP/2 off.
	h1 := &http.Transport{
		TLSClientConfig:     cfg.Clone(),
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: 64,
	}
	return &webhookClient{
		base:  strings.TrimSuffix(base, "/"),
		http2: &http.Client{Transport: h2},
		http1: &http.Client{Transport: h1},
	}, nil
}

// validate sends an AdmissionReview of the object and fails unless the webhook allows it.
func (c *webhookClient) validate(ctx context.Context, http2 bool, ns, name string, object []byte) error {
	if !json.Valid(object) {
		object = []byte("null")
	}
	review := map[string]interface{}{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"request": map[string]interface{}{
			"uid": ns + "/" + name, "namespace": ns, "name": name, "object": json.RawMessage(object),
		},
	}
	body, _ := json.Marshal(review)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/validate/"+ns+"/"+name, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	client := c.http1
	if http2 {
		client = c.http2
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", req.URL.Path, resp.StatusCode)
	}
	var out struct {
		Response struct {
			Allowed bool `json:"allowed"`
		} `json:"response"`
	}
	if err := json.Unmarshal(answer, &out); err != nil || !out.Response.Allowed {
		return fmt.Errorf("%s did not allow the request", req.URL.Path)
	}
	return nil
}
