package node

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckInterval is how often, at most, the certificate files are
// checked for changes: at the first TLS handshake after it has passed, so an
// idle node reads nothing and a renewed certificate is served within a
// second of being written.
const certCheckInterval = time.Second

// certReloader serves the certificate in a pair of PEM files and reads them
// again when either changes (size or modification time), so a renewal
// (certbot, a cron job) needs no restart. A pair that does not load (the
// key written but not yet the certificate) leaves the previous certificate
// in place and is tried again at the next check.
type certReloader struct {
	// Immutable after newCertReloader.
	certFile, keyFile string
	log               *slog.Logger

	// Guarded by mu.
	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // sizes and modification times of the loaded pair
	checked time.Time
}

// newCertReloader loads the pair once; an unreadable pair is an error.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := r.fileStamp()
	if err != nil {
		return nil, err
	}
	if err := r.loadLocked(stamp); err != nil {
		return nil, err
	}
	r.checked = time.Now()
	return r, nil
}

// fileStamp describes both files; it changes when either is rewritten.
func (r *certReloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

func (r *certReloader) loadLocked(stamp string) error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert, r.stamp = &cert, stamp
	return nil
}

// getCertificate is tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= certCheckInterval {
		r.checked = now
		if stamp, err := r.fileStamp(); err == nil && stamp != r.stamp {
			if err := r.loadLocked(stamp); err != nil {
				r.log.Warn("tls certificate changed but does not load; keeping the previous one", "err", err)
			} else {
				r.log.Info("tls certificate reloaded", "file", r.certFile)
			}
		}
	}
	return r.cert, nil
}
