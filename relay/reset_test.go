package relay

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"
)

// TestRelayTargetResetMidUpload: the target resets while the application
// is still uploading. Linux reports the reset to one system call only, so
// one of the relay's two directions may see a plain end of file: that must
// not become a CLOSE_WRITE, or the application would read a clean end (FIN)
// before the reset. Repeated, since which direction sees what is a race.
func TestRelayTargetResetMidUpload(t *testing.T) {
	for range 20 {
		forEachVariant(t, func(t *testing.T, l *link) {
			l.left.start(context.Background(), nil)
			l.right.start(context.Background(), nil)
			// right.app is the target: read 512 KiB then reset.
			go func() {
				buf := make([]byte, 512<<10)
				io.ReadFull(l.right.app, buf)
				l.right.app.SetLinger(0)
				l.right.app.Close()
			}()
			wErr := make(chan error, 1)
			go func() {
				chunk := make([]byte, 32<<10)
				for n := 0; n < 4<<20; n += len(chunk) {
					if _, err := l.left.app.Write(chunk); err != nil {
						wErr <- err
						return
					}
				}
				wErr <- nil
			}()
			l.left.app.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.ReadAll(l.left.app)
			we := <-wErr
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(we, syscall.ECONNRESET) {
				t.Errorf("the application read %v and wrote %v; want a connection reset", err, we)
			}
		})
	}
}
