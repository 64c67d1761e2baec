package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/netio/link"
)

// Device links across relay nodes (cluster mode). Each node records, in the cluster's conns
// bucket, the devices whose address changes on it (cluster.Owners, fed by the actors'
// AddressChanged), and answers other nodes' link requests (cluster.ServeNode). A link created
// through node C to a device that node A holds is two links: on A, one to the device, as a
// local one but without a cipher; on C, the one the client uses (its port, token, cipher),
// whose device leg dials A's link (link.Spec.Dial). DELETE on C closes both.

var (
	_ api.Links       = (*crossLinks)(nil)
	_ api.RemoteLinks = (*crossLinks)(nil)
)

// crossLinks is the device links' manager as the API sees it in cluster mode: the local
// manager's links, plus links to devices another node holds. Safe for concurrent use.
type crossLinks struct {
	m      linkManager
	conn   *cluster.Conn
	owners *cluster.Owners
	node   string // this node's name
	log    *slog.Logger

	mu     sync.Mutex
	remote map[string]remoteLeg // by the local link's token: its device leg on another node
}

// remoteLeg is the link on another node that a local link's device leg dials.
type remoteLeg struct{ node, token string }

// deviceMoved is the actors' AddressChanged: in cluster mode the device's owner is recorded.
func (r *Relay) deviceMoved(identity string) {
	if o := r.owners; o != nil {
		o.Changed(identity)
	}
}

// linksAdvertise is the address other nodes dial to reach this node's links: devicelink.advertise,
// else devicelink.listen ("" when links are off).
func (r *Relay) linksAdvertise() string {
	d := &r.cfg.DeviceLink
	if !d.Enabled() {
		return ""
	}
	return strings.Trim(cmp.Or(d.Advertise, d.Listen), "[]")
}

// buildClusterLinks, in cluster mode, records this node's devices in the conns bucket and
// answers other nodes' link requests; with links on, the API also reaches other nodes' devices
// through r.cross.
func (r *Relay) buildClusterLinks() error {
	if r.nats == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterConnectTimeout)
	defer cancel()
	owners, err := r.nats.OpenOwners(ctx, cluster.OwnersOptions{
		Self: cluster.Owner{Node: r.node, Links: r.linksAdvertise()},
		Current: func(device string) (string, bool) {
			st := r.sys.Device(device)
			return st.Transport, st.Remote.IsValid()
		},
	})
	if err != nil {
		return err
	}
	r.owners = owners
	if r.links != nil {
		r.legs = &servedLegs{by: make(map[string]string), stop: make(chan struct{}), done: make(chan struct{})}
		go r.reapLegs(r.legs)
		r.cross = &crossLinks{m: r.links, conn: r.nats, owners: owners, node: r.node,
			log: r.log.With("component", "devicelink"), remote: make(map[string]remoteLeg)}
	}
	srv, err := r.nats.ServeNode(r.node, cluster.NodeHandlers{OpenLink: r.serveLinkOpen, CloseLink: r.serveLinkClose})
	if err != nil {
		return err
	}
	r.nodeSrv = srv
	r.log.Info("cluster mode: this node records where its devices are connected and answers the other nodes' link requests",
		"node", r.node, "links", r.linksAdvertise())
	return nil
}

// stopClusterLinks closes the other nodes' legs of this node's links, stops answering other
// nodes and recording devices.
func (r *Relay) stopClusterLinks() {
	if r.cross != nil {
		r.cross.closeRemote()
	}
	if r.nodeSrv != nil {
		_ = r.nodeSrv.Close()
	}
	if r.legs != nil {
		r.legs.once.Do(func() { close(r.legs.stop) })
		<-r.legs.done
	}
	if r.owners != nil {
		_ = r.owners.Close()
	}
}

// apiLinks is what the API's device link endpoints drive: the manager, or crossLinks in cluster
// mode; nil when links are off.
func (r *Relay) apiLinks() api.Links {
	switch {
	case r.cross != nil:
		return r.cross
	case r.links != nil:
		return r.links
	}
	return nil
}

// serveLinkOpen answers another node's request for a link to a device this node holds: a link
// as a local one (without cipher or pinned client: the asking node's link is the client).
func (r *Relay) serveLinkOpen(ctx context.Context, q cluster.LinkRequest) cluster.LinkReply {
	if r.links == nil {
		return cluster.LinkReply{Error: cluster.LinkDisabled}
	}
	st := r.sys.Device(q.Device)
	if !st.Remote.IsValid() {
		return cluster.LinkReply{Error: cluster.LinkNotConnected}
	}
	addr := netip.AddrPortFrom(st.Remote.Addr().Unmap(), q.DevicePort)
	if q.Via == link.ViaListener {
		addr = netip.AddrPortFrom(st.Remote.Addr().Unmap(), st.Remote.Port())
	}
	info, err := r.links.Open(ctx, link.Spec{Device: strings.ToUpper(q.Device), Account: q.Account, Protocol: q.Protocol,
		Via: q.Via, DeviceAddr: addr, Timeout: q.Timeout})
	if err != nil {
		return linkFailure(err)
	}
	if q.From != "" {
		r.legs.add(info.Token, q.From)
	}
	return cluster.LinkReply{Port: info.Port, Token: info.Token, Links: r.linksAdvertise(), DeviceAddr: addr.String()}
}

// serveLinkClose answers another node's request to close a link it asked for.
func (r *Relay) serveLinkClose(_ context.Context, q cluster.LinkRequest) cluster.LinkReply {
	if r.links == nil {
		return cluster.LinkReply{Error: cluster.LinkDisabled}
	}
	r.legs.remove(q.Token)
	if err := r.links.Close(q.Token); err != nil {
		return linkFailure(err)
	}
	return cluster.LinkReply{}
}

// The link errors a node request carries, by code (both ways).
var linkErrors = []struct {
	code string
	err  error
}{
	{cluster.LinkPortsExhausted, link.ErrPortsExhausted},
	{cluster.LinkSourceBusy, link.ErrSourceBusy},
	{cluster.LinkProtocolOff, link.ErrProtocolOff},
	{cluster.LinkClosed, link.ErrClosed},
	{cluster.LinkNotFound, link.ErrNotFound},
	{cluster.LinkNotConnected, api.ErrNotConnected},
	{cluster.LinkDisabled, api.ErrNodeLinksOff},
}

func linkFailure(err error) cluster.LinkReply {
	for _, e := range linkErrors {
		if errors.Is(err, e.err) {
			return cluster.LinkReply{Error: e.code, Detail: err.Error()}
		}
	}
	return cluster.LinkReply{Error: cluster.LinkFailed, Detail: err.Error()}
}

// replyError is the error a node's reply carries (nil: none), as the local manager would say it.
func replyError(node string, rep cluster.LinkReply) error {
	if rep.Error == "" {
		return nil
	}
	for _, e := range linkErrors {
		if rep.Error == e.code {
			return fmt.Errorf("node %s: %w", node, e.err)
		}
	}
	return fmt.Errorf("node %s: %s", node, rep.Detail)
}

// Locate implements api.RemoteLinks: the conns bucket's owner of device, unless it is this node.
func (x *crossLinks) Locate(ctx context.Context, device string) (string, bool, error) {
	o, ok, err := x.owners.Lookup(ctx, device)
	if err != nil || !ok || o.Node == x.node {
		return "", false, err
	}
	return o.Transport, true, nil
}

// OpenRemote implements api.RemoteLinks: the device leg on the node holding the device, then the
// client's leg here, dialling it.
func (x *crossLinks) OpenRemote(ctx context.Context, s link.Spec, devicePort uint16) (link.Info, error) {
	o, ok, err := x.owners.Lookup(ctx, s.Device)
	if err != nil {
		return link.Info{}, err
	}
	if !ok || o.Node == x.node {
		return link.Info{}, api.ErrNotConnected
	}
	rep, err := x.conn.OpenLink(ctx, o.Node, cluster.LinkRequest{Device: s.Device, Account: s.Account, Protocol: s.Protocol,
		Via: s.Via, DevicePort: devicePort, Timeout: s.Timeout, From: x.node})
	if errors.Is(err, cluster.ErrNodeGone) {
		return link.Info{}, fmt.Errorf("%w: %w", api.ErrNotConnected, err)
	}
	if err == nil {
		err = replyError(o.Node, rep)
	}
	if err != nil {
		return link.Info{}, err
	}
	far := remoteLeg{node: o.Node, token: rep.Token}
	addr, aerr := netip.ParseAddr(rep.Links)
	devAddr, derr := netip.ParseAddrPort(rep.DeviceAddr)
	if aerr != nil || derr != nil || rep.Port == 0 {
		x.closeLeg(far)
		return link.Info{}, fmt.Errorf("node %s answered a link at %q port %d to %q", o.Node, rep.Links, rep.Port, rep.DeviceAddr)
	}
	local := s
	local.DeviceAddr, local.Dial = devAddr, netip.AddrPortFrom(addr, rep.Port)
	if local.Protocol == link.UDP {
		local.Via = link.ViaSocket // to the other node's link; it reaches the device as asked
	}
	info, err := x.m.Open(ctx, local)
	if err != nil {
		x.closeLeg(far)
		return link.Info{}, err
	}
	x.mu.Lock()
	x.prune()
	x.remote[info.Token] = far
	x.mu.Unlock()
	return info, nil
}

// prune forgets the remote legs of links the manager no longer lists. Called with x.mu held.
func (x *crossLinks) prune() {
	if len(x.remote) == 0 {
		return
	}
	live := make(map[string]bool, len(x.remote))
	for _, in := range x.m.List() {
		live[in.Token] = true
	}
	for t := range x.remote {
		if !live[t] {
			delete(x.remote, t)
		}
	}
}

// closeLegTimeout bounds closing the other nodes' legs of one link, or of all at shutdown.
const closeLegTimeout = 3 * time.Second

// closeLeg asks a node to close its leg of a link (logged when it cannot).
func (x *crossLinks) closeLeg(far remoteLeg) {
	ctx, cancel := context.WithTimeout(context.Background(), closeLegTimeout)
	defer cancel()
	x.closeLegCtx(ctx, far)
}

func (x *crossLinks) closeLegCtx(ctx context.Context, far remoteLeg) {
	rep, err := x.conn.CloseLink(ctx, far.node, cluster.LinkRequest{Token: far.token})
	if err == nil {
		err = replyError(far.node, rep)
	}
	if err != nil && !errors.Is(err, link.ErrNotFound) && !errors.Is(err, cluster.ErrNodeGone) {
		x.log.Warn("device link: the other node's leg was not closed", "node", far.node, "err", err)
	}
}

// closeRemote closes the other nodes' legs of every link (the relay stops).
func (x *crossLinks) closeRemote() {
	x.mu.Lock()
	legs := make([]remoteLeg, 0, len(x.remote))
	for _, far := range x.remote {
		legs = append(legs, far)
	}
	clear(x.remote)
	x.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), closeLegTimeout)
	defer cancel()
	for _, far := range legs {
		x.closeLegCtx(ctx, far)
	}
}

// Open implements api.Links: a local link.
func (x *crossLinks) Open(ctx context.Context, s link.Spec) (link.Info, error) {
	return x.m.Open(ctx, s)
}

// List implements api.Links: the local manager's links (those to other nodes' devices too).
func (x *crossLinks) List() []link.Info { return x.m.List() }

// Close implements api.Links: the link, and its leg on another node if it has one.
func (x *crossLinks) Close(token string) error {
	if err := x.m.Close(token); err != nil {
		return err
	}
	x.mu.Lock()
	far, ok := x.remote[token]
	delete(x.remote, token)
	x.mu.Unlock()
	if ok {
		x.closeLeg(far)
	}
	return nil
}

// servedLegs are this node's links that other nodes asked for (their device legs), by token:
// the asking node. Safe for concurrent use.
type servedLegs struct {
	mu   sync.Mutex
	by   map[string]string
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func (l *servedLegs) add(token, node string) {
	l.mu.Lock()
	l.by[token] = node
	l.mu.Unlock()
}

func (l *servedLegs) remove(token string) {
	l.mu.Lock()
	delete(l.by, token)
	l.mu.Unlock()
}

// legsCheckEvery is how often a node checks that the nodes which asked for its links still run
// (nanoseconds; 0: 30 s). Tests shorten it.
var legsCheckEvery atomic.Int64

// legsMisses is how many checks in a row a node must miss before its legs are closed: a node
// whose NATS connection is being re-established misses one.
const legsMisses = 2

// reapLegs closes, every legsCheckEvery, the links other nodes asked for whose node is gone
// (stopped or killed without closing them) — a waiting TCP leg, or a UDP leg, would otherwise
// hold its port until this node restarts; a paired TCP leg ends with the asking node's socket
// — and forgets the legs that ended.
func (r *Relay) reapLegs(l *servedLegs) {
	defer close(l.done)
	every := time.Duration(legsCheckEvery.Load())
	if every <= 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	missed := map[string]int{} // by node: checks missed in a row
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		idle := map[string]bool{} // live links a gone node's death leaves open
		for _, in := range r.links.List() {
			if in.State == link.StateWaiting || in.State == link.StateOpen && in.Protocol == link.UDP {
				idle[in.Token] = true
			} else if in.State == link.StateOpen {
				idle[in.Token] = false
			}
		}
		byNode := map[string][]string{}
		l.mu.Lock()
		for token, node := range l.by {
			reap, live := idle[token]
			switch {
			case !live:
				delete(l.by, token)
			case reap:
				byNode[node] = append(byNode[node], token)
			}
		}
		l.mu.Unlock()
		for node := range missed {
			if _, ok := byNode[node]; !ok {
				delete(missed, node)
			}
		}
		for node, tokens := range byNode {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := r.nats.Ping(ctx, node)
			cancel()
			if !errors.Is(err, cluster.ErrNodeGone) {
				delete(missed, node)
				continue
			}
			if missed[node]++; missed[node] < legsMisses {
				continue
			}
			delete(missed, node)
			for _, token := range tokens {
				_ = r.links.Close(token)
				l.remove(token)
			}
			r.log.Info("device links closed: the node that asked for them is gone", "component", "devicelink",
				"node", node, "links", len(tokens))
		}
	}
}
