package main

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// churnBatch goroutines live at once: each batch ends before the next starts, so the runtime
// reuses their goroutine structs over and over, as a busy server does.
const churnBatch = 1000

// churn starts ?n= short-lived goroutines (default 100000, at most 10 million), in batches, and
// answers "churned N".
func churn(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n <= 0 || n > 10000000 {
		n = 100000
	}
	var ran int64
	for started := 0; started < n; {
		var wg sync.WaitGroup
		for i := 0; i < churnBatch && started < n; i++ {
			started++
			wg.Add(1)
			go func() {
				defer wg.Done()
				atomic.AddInt64(&ran, 1)
			}()
		}
		wg.Wait()
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "churned %d\n", atomic.LoadInt64(&ran))
}
