package sds

import (
	"context"
	"errors"
	"io"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Handler implements secretv3.SecretDiscoveryServiceServer.
type Handler struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	c Config
}

var _ secretv3.SecretDiscoveryServiceServer = (*Handler)(nil)

// New returns a Handler; empty names in cfg.Settings take SPIRE's defaults.
func New(cfg Config) *Handler {
	cfg.Settings = cfg.Settings.withDefaults()
	return &Handler{c: cfg}
}

// DeltaSecrets is not implemented, as in SPIRE: Envoy falls back to
// StreamSecrets.
func (h *Handler) DeltaSecrets(secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	return status.Error(codes.Unimplemented, "Method is not implemented")
}

// FetchSecrets answers one request from the caller's current view, with
// no version and no nonce.
func (h *Handler) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	selectors, log, err := h.c.Attest(ctx, "FetchSecrets")
	if err != nil {
		return nil, err
	}
	log = log.With("resource_names", req.GetResourceNames())
	if err := checkRequest(req); err != nil {
		log.Warn("sds: request refused", "err", err)
		return nil, err
	}
	resp, err := buildResponse(h.c.Settings, "", newQuery(req), h.c.Manager.FetchWorkloadUpdate(selectors))
	if err != nil {
		log.Error("Error building fetch secrets response", "err", err)
		return nil, err
	}
	log.Debug("Sending FetchSecrets response", "count", len(resp.Resources))
	return resp, nil
}

// StreamSecrets serves an xDS stream (see stream for its rules). The
// caller's cache view only ever holds the latest update, and a send blocks
// while the client does not read, so a slow client holds one response and
// one update, however many rotations it misses; it then gets the latest.
func (h *Handler) StreamSecrets(ss secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	ctx := ss.Context()
	selectors, log, err := h.c.Attest(ctx, "StreamSecrets")
	if err != nil {
		return err
	}
	sub, err := h.c.Manager.SubscribeToCacheChanges(ctx, selectors)
	if err != nil {
		log.Error("Subscribe to cache changes failed", "err", err)
		return status.Errorf(codes.Unavailable, "could not subscribe to cache changes: %v", err)
	}
	defer sub.Finish()

	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	st := newStream(h.c.Settings, log)
	for {
		var resp *discoveryv3.DiscoveryResponse
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			log.Error("Received error from stream secrets server", "err", err)
			return err
		case req := <-reqs:
			if err := checkRequest(req); err != nil {
				log.Warn("sds: request refused", "err", err)
				return err
			}
			resp, err = st.onRequest(req)
		case upd, ok := <-sub.Updates():
			if !ok {
				return status.Error(codes.Unavailable, "subscription closed")
			}
			resp, err = st.onUpdate(upd)
		}
		if err != nil {
			log.Error("Error building stream secrets response", "err", err)
			return err
		}
		if resp == nil {
			continue
		}
		if err := ss.Send(resp); err != nil {
			log.Error("Error sending secrets over stream", "err", err)
			return err
		}
	}
}
