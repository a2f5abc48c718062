package sds

import (
	"log/slog"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe-hw/spire-hw/agent/cache"
)

// stream is the xDS state of one StreamSecrets call, SPIRE's: the version
// counts workload updates, a response carries a fresh nonce, and a request
// is an ACK or NACK of the last response only when it echoes that nonce
// (any other is stale and ignored). A response goes out when the names
// asked for change (the first request included) and on every workload
// update once something has been asked for; a NACK with the same names
// gets nothing new, so a client that cannot apply a version is not sent it
// again until the next update.
type stream struct {
	s   Settings
	log *slog.Logger

	version   int64
	upd       *cache.WorkloadUpdate
	asked     bool
	last      query
	lastNonce string
	lastNode  nodeInfo
}

func newStream(s Settings, log *slog.Logger) *stream {
	return &stream{s: s, log: log}
}

func (st *stream) versionInfo() string { return strconv.FormatInt(st.version, 10) }

// onRequest takes a request that passed checkRequest and returns the
// response to send, if any.
func (st *stream) onRequest(req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	st.log.Debug("Received StreamSecrets request", "resource_names", req.GetResourceNames(),
		"version_info", req.GetVersionInfo(), "nonce", req.GetResponseNonce())
	if d := req.GetErrorDetail(); d != nil {
		st.log.Error("Envoy reported errors applying secrets", "resource_names", req.GetResourceNames(), "error", d.GetMessage())
	}
	q := newQuery(req)
	if st.lastNonce != "" {
		if req.GetResponseNonce() != st.lastNonce {
			st.log.Warn("Received unexpected nonce; ignoring request", "nonce", req.GetResponseNonce(), "expect", st.lastNonce)
			return nil, nil
		}
		if v := req.GetVersionInfo(); v == "" || v != st.versionInfo() {
			// A NACK may still change the names, so it is not the end of
			// this request.
			st.log.Error("Client rejected expected version and rolled back", "version_info", v, "expect", st.versionInfo())
		}
		if !q.node.sent {
			q.node = st.lastNode
		}
	}
	changed := !st.asked || namesChanged(st.last.names, q.names)
	st.last, st.asked = q, true
	if !changed || st.upd == nil {
		// Nothing new to say, or nothing to say it with yet: the first
		// workload update will answer.
		return nil, nil
	}
	return st.respond()
}

// onUpdate takes a workload update and returns the response to send, if
// anything has been asked for yet.
func (st *stream) onUpdate(upd *cache.WorkloadUpdate) (*discoveryv3.DiscoveryResponse, error) {
	st.upd = upd
	st.version++
	if !st.asked {
		return nil, nil
	}
	return st.respond()
}

func (st *stream) respond() (*discoveryv3.DiscoveryResponse, error) {
	resp, err := buildResponse(st.s, st.versionInfo(), st.last, st.upd)
	if err != nil {
		return nil, err
	}
	// The nonce counts from the moment the response is built: if it
	// cannot be sent, the stream ends anyway.
	st.lastNonce = resp.Nonce
	if st.last.node.sent {
		st.lastNode = st.last.node
	}
	st.log.Debug("Sending StreamSecrets response", "version_info", resp.VersionInfo, "nonce", resp.Nonce, "count", len(resp.Resources))
	return resp, nil
}
