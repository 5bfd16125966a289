package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/trust"
)

// Clients on reload: an added [[client]] starts dialing; a removed one
// stops taking new streams (its tunnels are retired, its forwards close)
// and its tunnels close once their streams have ended. A changed one is
// removed and added again under the same name: the new one dials at once,
// the old one drains.

// clientMaps returns the clients now. The maps are replaced by a reload,
// never changed in place.
func (a *Agent) clientMaps() (map[string]*client.Client, map[string]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.clients, a.rawClients
}

// clientContext is the context a [[client]]'s Run gets: ended when the
// agent's tunnels end, or when a reload drained the client.
func (a *Agent) clientContext(name string) context.Context {
	ctx, cancel := context.WithCancel(a.tunnelCtx)
	a.mu.Lock()
	if a.clientStop == nil {
		a.clientStop = map[string]context.CancelFunc{}
	}
	a.clientStop[name] = cancel
	a.mu.Unlock()
	return ctx
}

// clientPlan is what a reload does to the clients.
type clientPlan struct {
	add    map[string]*client.Client // built, not yet running
	remove map[string]bool           // by name: removed or changed
	cfg    map[string]config.Client
}

// planClients builds the clients nc adds or changes; an error leaves
// everything as it was.
func (a *Agent) planClients(old, nc *config.Config) (*clientPlan, error) {
	p := &clientPlan{add: map[string]*client.Client{}, remove: map[string]bool{}, cfg: map[string]config.Client{}}
	olds := map[string]config.Client{}
	for _, c := range old.Clients {
		olds[c.Name] = c
	}
	for _, cc := range nc.Clients {
		p.cfg[cc.Name] = cc
		if o, ok := olds[cc.Name]; ok && sameIgnoringLine(o, cc) {
			continue
		}
		c, err := a.buildClient(cc)
		if err != nil {
			return nil, err
		}
		p.add[cc.Name] = c
		if _, ok := olds[cc.Name]; ok {
			p.remove[cc.Name] = true
		}
	}
	for _, c := range old.Clients {
		if _, ok := p.cfg[c.Name]; !ok {
			p.remove[c.Name] = true
		}
	}
	return p, nil
}

// commitClients swaps the clients in, starts the new ones and drains the
// removed ones; it returns the removed clients (whose forwards must close).
// Called with a.certs.mu held.
func (a *Agent) commitClients(p *clientPlan, nc *config.Config) map[*client.Client]bool {
	if len(p.add) == 0 && len(p.remove) == 0 {
		a.mu.Lock()
		a.cfg.Clients = nc.Clients
		a.mu.Unlock()
		return nil
	}
	a.mu.Lock()
	clients, raw := maps.Clone(a.clients), maps.Clone(a.rawClients)
	gone := map[*client.Client]bool{}
	stops := map[*client.Client]context.CancelFunc{}
	for name := range p.remove {
		if c := clients[name]; c != nil {
			gone[c] = true
			stops[c] = a.clientStop[name]
			delete(a.clientStop, name)
		}
		delete(clients, name)
		delete(raw, name)
	}
	for name, c := range p.add {
		clients[name] = c
		if !*p.cfg[name].Mux {
			raw[name] = true
		}
	}
	a.clients, a.rawClients = clients, raw
	a.cfg.Clients = nc.Clients
	runCtx := a.runCtx
	a.mu.Unlock()

	// Certificate upkeep follows the clients.
	w := &a.certs
	if w.endpoints != nil {
		w.endpoints = slices.DeleteFunc(w.endpoints, func(e *certEndpoint) bool {
			for c := range gone {
				if e.creds == c.Creds {
					return true
				}
			}
			return false
		})
		for name, c := range p.add {
			w.add(a, fmt.Sprintf("client %q", name), []any{"tunnel", name}, trust.SideClient, c.Creds, p.cfg[name].TLS, c.RetryNow)
		}
	}
	if runCtx != nil {
		for name, c := range p.add {
			if raw[name] {
				continue
			}
			ctx := a.clientContext(name)
			a.extra.Go(func() { c.Run(ctx) })
		}
	}
	for c, stop := range stops {
		a.drainClient(c, stop)
	}
	return gone
}

// drainClient retires c's tunnels and stops c once they carry no stream.
func (a *Agent) drainClient(c *client.Client, stop context.CancelFunc) {
	for _, t := range c.Tunnels() {
		t.Retire()
	}
	a.log.Info("client removed by reload: its tunnels close when their streams end", "tunnel", c.Name)
	if stop == nil {
		return // a mux = false client, or the agent is not running yet
	}
	a.extra.Go(func() {
		defer stop()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			busy := false
			for _, t := range c.Tunnels() {
				if !t.Retiring() {
					t.Retire() // redialed since: no new streams on it either
				}
				busy = busy || t.Streams() > 0
			}
			if !busy {
				a.log.Info("removed client drained; closing its tunnels", "tunnel", c.Name)
				return
			}
			select {
			case <-tick.C:
			case <-a.tunnelCtx.Done():
				return
			}
		}
	})
}
