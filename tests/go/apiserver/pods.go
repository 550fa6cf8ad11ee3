package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// podKey is where kube-apiserver keeps a pod in etcd.
func podKey(ns, name string) string { return "/registry/pods/" + ns + "/" + name }

// inGoroutine runs f in a goroutine of its own and waits for it: the handler's work fanned out
// further, as kube-apiserver's handlers do (so a call is made two goroutines below the one that
// read the request).
func inGoroutine(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func (a *kubeAPI) get(w http.ResponseWriter, r *http.Request, ns, name string) {
	if a.store != nil {
		var value []byte
		var found bool
		var err error
		inGoroutine(func() { value, found, err = a.store.get(r.Context(), podKey(ns, name)) })
		switch {
		case err != nil:
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		case found:
			w.Header().Set("Content-Type", "application/json")
			w.Write(value)
			return
		}
	}
	if a.hasPod(name) {
		writeJSON(w, pod(ns, name))
		return
	}
	writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("pods %q not found", name))
}

func (a *kubeAPI) list(w http.ResponseWriter, r *http.Request, ns string) {
	items := make([]interface{}, 0, a.pods)
	if a.store != nil {
		values, err := a.store.list(r.Context(), podKey(ns, ""))
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		for _, v := range values {
			items = append(items, json.RawMessage(v))
		}
	} else {
		for i := 0; i < a.pods; i++ {
			items = append(items, pod(ns, "pod-"+strconv.Itoa(i)))
		}
	}
	writeJSON(w, map[string]interface{}{"kind": "PodList", "apiVersion": "v1", "items": items})
}

// watch streams the namespace's pod events until ?timeoutSeconds or the client goes away; with
// no store, a watch that sees no events.
func (a *kubeAPI) watch(w http.ResponseWriter, r *http.Request, ns string) {
	startStream(w)
	ctx := r.Context()
	timeout := time.NewTimer(watchTimeout(r))
	defer timeout.Stop()
	if a.store == nil {
		select {
		case <-timeout.C:
		case <-ctx.Done():
		}
		return
	}
	flusher, _ := w.(http.Flusher)
	events := make(chan []byte, 16)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		a.store.watch(ctx, podKey(ns, ""), func(v []byte) {
			select {
			case events <- v:
			case <-stop:
			}
		})
	}()
	for {
		select {
		case v := <-events:
			fmt.Fprintf(w, "{\"type\":\"MODIFIED\",\"object\":%s}\n", v)
			if flusher != nil {
				flusher.Flush()
			}
		case <-timeout.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// create asks the webhook (HTTP/2, from a goroutine of the handler's), then stores the pod with
// an etcd Txn that fails if it exists.
func (a *kubeAPI) create(w http.ResponseWriter, r *http.Request, ns string, body []byte) {
	var obj struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &obj); err != nil || obj.Metadata.Name == "" {
		writeStatus(w, http.StatusBadRequest, "BadRequest", "the body must be a pod with metadata.name")
		return
	}
	name := obj.Metadata.Name
	var err error
	inGoroutine(func() { err = a.admit(r, true, ns, name, body) })
	if !a.admitted(w, err) {
		return
	}
	stored := podJSON(ns, name)
	if a.store != nil {
		created, err := a.store.create(r.Context(), podKey(ns, name), stored)
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		if !created {
			writeStatus(w, http.StatusConflict, "AlreadyExists", fmt.Sprintf("pods %q already exists", name))
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(stored)
}

// update asks the webhook over HTTP/1.1, then puts the pod.
func (a *kubeAPI) update(w http.ResponseWriter, r *http.Request, ns, name string, body []byte) {
	if !a.admitted(w, a.admit(r, false, ns, name, body)) {
		return
	}
	stored := podJSON(ns, name)
	if a.store != nil {
		if err := a.store.update(r.Context(), podKey(ns, name), stored); err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(stored)
}

func (a *kubeAPI) delete(w http.ResponseWriter, r *http.Request, ns, name string) {
	if a.store != nil {
		if _, err := a.store.delete(r.Context(), podKey(ns, name)); err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
	}
	writeJSON(w, map[string]interface{}{"kind": "Status", "apiVersion": "v1", "status": "Success"})
}

// admit calls the webhook when there is one.
func (a *kubeAPI) admit(r *http.Request, http2 bool, ns, name string, body []byte) error {
	if a.webhook == nil {
		return nil
	}
	return a.webhook.validate(r.Context(), http2, ns, name, body)
}

// admitted answers the error of an admission, if any; true when the request may go on.
func (a *kubeAPI) admitted(w http.ResponseWriter, err error) bool {
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, "InternalError", "admission webhook: "+err.Error())
		return false
	}
	return true
}

func podJSON(ns, name string) []byte {
	b, _ := json.Marshal(pod(ns, name))
	return b
}
