package tunnel

import (
	"io"
	"testing"
)

// benchAcceptors is how many goroutines accept streams in
// BenchmarkOpenUnderLoad: one, as agents do now that accepting does not
// wait for the ACK to be written (sixteen before).
const benchAcceptors = 1

// BenchmarkOpenUnderLoad measures a new stream's first round trip (open,
// a byte each way) while another stream keeps the tunnel busy with bulk
// data, over loopback TCP: what a new connection waits for on a loaded
// tunnel.
func BenchmarkOpenUnderLoad(b *testing.B) {
	client, server := tunnelPair(b, testOpts())
	for range benchAcceptors {
		go func() {
			for {
				st, err := server.Accept()
				if err != nil {
					return
				}
				go func() {
					one := make([]byte, 1)
					if _, err := io.ReadFull(st, one); err != nil {
						return
					}
					if one[0] == 'B' {
						st.Admit()
						io.Copy(io.Discard, st)
						return
					}
					st.Write([]byte{'k'})
					st.Close()
				}()
			}
		}()
	}
	bulk, err := client.Open()
	if err != nil {
		b.Fatal(err)
	}
	bulk.Admit()
	stop := make(chan struct{})
	bulkDone := make(chan struct{})
	go func() {
		defer close(bulkDone)
		bulk.Write([]byte{'B'})
		chunk := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := bulk.Write(chunk); err != nil {
				return
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	one := make([]byte, 1)
	for range b.N {
		st, err := client.Open()
		if err != nil {
			b.Fatal(err)
		}
		st.Write([]byte{'o'})
		if _, err := io.ReadFull(st, one); err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
	b.StopTimer()
	close(stop)
	client.Close()
	<-bulkDone
}
