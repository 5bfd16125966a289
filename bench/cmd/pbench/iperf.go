//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"time"
)

// bulkResult is what one iperf3 run moved, as the receiver counted it.
type bulkResult struct {
	bytes float64
	bps   float64
}

// runIperf runs an iperf3 client against addr (an iperf3 server, or a
// tunnel front leading to one) for d with the given parallel streams.
// prefix runs it elsewhere (`ip netns exec NS`).
func runIperf(ctx context.Context, prefix []string, addr string, d time.Duration, streams int) (bulkResult, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bulkResult{}, err
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	argv := append(append([]string(nil), prefix...), "iperf3", "-c", host, "-p", port,
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J")
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
	res, perr := parseIperf(out)
	if perr != nil {
		if err != nil {
			return bulkResult{}, fmt.Errorf("iperf3: %v: %v", err, perr)
		}
		return bulkResult{}, fmt.Errorf("iperf3: %v", perr)
	}
	return res, nil
}

// parseIperf reads the receiver's totals from iperf3's JSON.
func parseIperf(out []byte) (bulkResult, error) {
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return bulkResult{}, fmt.Errorf("no JSON result (%v)", err)
	}
	if j.Error != "" {
		return bulkResult{}, fmt.Errorf("%s", j.Error)
	}
	if j.End.SumReceived.Bytes <= 0 {
		return bulkResult{}, fmt.Errorf("no bytes received")
	}
	return bulkResult{bytes: j.End.SumReceived.Bytes, bps: j.End.SumReceived.BitsPerSecond}, nil
}
