package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/config"
)

// The control socket: `postern status` and `postern reload` reach the
// running agent over a Unix domain socket named after its config file,
// with no setup: in the runtime folder (/run/postern, which the systemd
// unit creates) when the agent may write there, else beside the config
// file. The socket is mode 0660: its owner (the agent's user) and group,
// and root, may use it; being able to open it is the authentication. On
// Windows (10 1803 and later have Unix sockets) it is beside the config
// file, under ProgramData\Postern's access rules (Administrators and
// SYSTEM). The same requests also work over the [admin] endpoint.

// ControlSocketPaths are the places the control socket of the agent
// running configPath may be, in the order the agent tries them.
func ControlSocketPaths(configPath string) []string {
	abs, err := filepath.Abs(configPath)
	if err != nil {
		abs = configPath
	}
	base := strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs)) + ".control.sock" // not NAME.sock: a forward may well be called that
	var out []string
	if dir := runtimeDir(); dir != "" {
		out = append(out, filepath.Join(dir, base))
	}
	return append(out, filepath.Join(filepath.Dir(abs), base))
}

// ConfigPathOf is the absolute path of the agent's config file, as the
// control socket reports it (so a command can tell agents apart).
func ConfigPathOf(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// listenControl binds the control socket at the first place that works. A
// socket file another agent answers on is left alone; a stale one is
// replaced. No socket is not an error: the agent runs without one and
// says so.
func (a *Agent) listenControl() {
	if a.cfg.Path == "" {
		return
	}
	var errs []string
	for _, path := range ControlSocketPaths(a.cfg.Path) {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			errs = append(errs, fmt.Sprintf("%s: another agent answers on it", path))
			continue
		}
		os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if err := secureSocket(path); err != nil {
			ln.Close()
			errs = append(errs, fmt.Sprintf("chmod %s: %v", path, err))
			continue
		}
		a.control = ln
		return
	}
	a.log.Warn("no control socket: postern status and reload need the [admin] endpoint", "err", strings.Join(errs, "; "))
}

// serveControl answers status and reload on the control socket until ctx
// is done, then removes the socket file.
func (a *Agent) serveControl(ctx context.Context) {
	mux := http.NewServeMux()
	a.controlRoutes(mux, false)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(a.control); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		a.log.Warn("control socket stopped serving", "socket", a.control.Addr().String(), "err", err)
	}
}

// ControlAddr is the control socket's path, or "".
func (a *Agent) ControlAddr() string {
	if a.control == nil {
		return ""
	}
	return a.control.Addr().String()
}

// ConfigResponse is the answer to GET /config: the agent, its config file,
// and the config it runs now (as the last reload applied it), which
// postern check --diff compares with the file.
type ConfigResponse struct {
	Agent   string         `json:"agent"`
	Config  string         `json:"config"`
	Running *config.Config `json:"running,omitempty"`
}

// ReloadResponse is the answer to POST /reload.
type ReloadResponse struct {
	Agent  string `json:"agent"`
	OK     bool   `json:"ok"`
	Result string `json:"result"` // what the reload did, in plain words
	Err    string `json:"error,omitempty"`
}

// controlRoutes adds GET /status, GET /config and POST /reload to mux.
// Over TCP (the [admin] endpoint) a reload is taken only from a loopback
// address: it is meant for the machine's operators.
func (a *Agent) controlRoutes(mux *http.ServeMux, tcp bool) {
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		res := ConfigResponse{Agent: a.name(), Config: ConfigPathOf(a.cfg.Path)}
		if !tcp || fromLoopback(r) { // the running config is for this machine's operators, as reload is
			res.Running = a.snapshot()
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if tcp && !fromLoopback(r) {
			http.Error(w, "reload is taken from this machine only (a loopback address or the control socket)", http.StatusForbidden)
			return
		}
		res := a.reloadCommand()
		code := http.StatusOK
		if !res.OK {
			code = http.StatusUnprocessableEntity
		}
		writeJSON(w, code, res)
	})
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// reloadCommand runs the agent's reload for `postern reload` and says what
// it did.
func (a *Agent) reloadCommand() ReloadResponse {
	a.log.Info("reload requested", "by", "postern reload")
	rep, err := a.ReloadReport()
	res := ReloadResponse{Agent: a.name(), OK: err == nil, Result: rep}
	if err != nil {
		res.Err = err.Error()
	}
	return res
}
