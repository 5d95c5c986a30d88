// Command vcsim serves govmomi's vSphere API simulator (package
// github.com/vmware/govmomi/simulator, from Debian's
// golang-github-vmware-govmomi-dev) on a loopback port, for the ESX backend's
// tests. Build and run it through tools/vcsim.sh.
//
// It prints one line on stdout once the server answers, then serves until
// SIGTERM or SIGINT and exits 0:
//
//	URL=https://user:pass@127.0.0.1:PORT/sdk[ CERT=PATH]
//
// CERT (the rest of the line, an absolute path) is there only with -cert-out;
// the certificate is a new one on every start. The simulator logs a lot on
// stderr (every property change it collects). The inventory is
// the simulator's standard model, so names and UUIDs are the same on every
// start with the same flags: with -esx the VMs are ha-host_VM0..N-1 on the
// host "localhost.localdomain"; otherwise DC0_H<i>_VM<j> on standalone host
// DC0_H<i> and DC0_C<k>_RP0_VM<j> in cluster DC0_C<k>. All VMs start
// powered on. /hn/question and /hn/tools (guest.go) give a VM a
// pending question or change its VMware Tools status.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback `address:port` to serve on (port 0: a free port)")
	esx := flag.Bool("esx", false, "simulate one standalone ESXi host instead of a vCenter")
	vms := flag.Int("vms", 2, "VMs per standalone host and per cluster")
	hosts := flag.Int("hosts", 1, "vCenter only: standalone hosts in the datacenter")
	clusters := flag.Int("clusters", 1, "vCenter only: clusters in the datacenter")
	clusterHosts := flag.Int("cluster-hosts", 3, "vCenter only: hosts per cluster")
	username := flag.String("username", "user", "the only user name the simulator accepts")
	password := flag.String("password", "pass", "the only password the simulator accepts")
	useTLS := flag.Bool("tls", true, "serve HTTPS with a self-signed certificate made at start")
	certOut := flag.String("cert-out", "", "write the server's certificate (PEM) to this `file`")
	flag.Parse()
	log.SetPrefix("vcsim: ")

	if flag.NArg() > 0 || *vms < 0 || *hosts < 0 || *clusters < 0 || *clusterHosts < 0 {
		log.Fatal("bad arguments; see -help")
	}
	if *esx {
		flag.Visit(func(f *flag.Flag) {
			if f.Name == "hosts" || f.Name == "clusters" || f.Name == "cluster-hosts" {
				log.Fatalf("-%s is for the vCenter model, not -esx", f.Name)
			}
		})
	}
	if *certOut != "" && !*useTLS {
		log.Fatal("-cert-out needs -tls")
	}
	// Never serve on an outside address: the credentials are test ones.
	host, _, err := net.SplitHostPort(*listen)
	ip := net.ParseIP(host)
	if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		log.Fatalf("-listen %q: not a loopback address:port", *listen)
	}

	// Each model datastore is a directory made with ioutil.TempDir: keep them
	// all in one private directory, removed on exit.
	tmp, err := ioutil.TempDir("", "hn-vcsim-")
	if err != nil {
		log.Fatal(err)
	}
	os.Setenv("TMPDIR", tmp)
	fail := func(err error) {
		os.RemoveAll(tmp)
		log.Fatal(err)
	}
	// NewServer panics when it cannot listen (port taken).
	defer func() {
		if r := recover(); r != nil {
			fail(fmt.Errorf("%v", r))
		}
	}()

	// Catch the signals before anyone can know our URL, so that every stop
	// cleans up and exits 0.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	} else {
		model.Host = *hosts
		model.Cluster = *clusters
		model.ClusterHost = *clusterHosts
	}
	model.Machine = *vms
	if err := model.Create(); err != nil {
		fail(err)
	}

	// A User other than simulator.DefaultLogin makes the SessionManager
	// check the name and password (with DefaultLogin it takes any).
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	if *useTLS {
		cert, err := selfSigned(ip)
		if err != nil {
			fail(err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	// NewServer registers the SDK on this mux (it makes one only when none is set).
	model.Service.ServeMux = http.NewServeMux()
	handleGuests(model.Service.ServeMux)
	server := model.Service.NewServer() // listening and serving on return

	line := "URL=" + server.URL.String()
	if *certOut != "" {
		der := model.Service.TLS.Certificates[0].Certificate[0]
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		path, err := filepath.Abs(*certOut)
		if err == nil {
			err = ioutil.WriteFile(path, pemBytes, 0644)
		}
		if err != nil {
			fail(err)
		}
		line += " CERT=" + path
	}
	fmt.Println(line) // os.Stdout is unbuffered: the line is out now

	<-stop
	// No server.Close(): it waits for every request in progress, and a
	// WaitForUpdatesEx can take as long as its MaxWaitSeconds (or forever).
	// Exiting drops the connections.
	server.Listener.Close()
	os.RemoveAll(tmp)
	os.Exit(0)
}

// selfSigned makes a new ECDSA P-256 certificate, its own CA, for localhost,
// 127.0.0.1, ::1 and ip (nil: none). The simulator's built-in one has a 1024-bit RSA
// key, which OpenSSL 3 at its default security level refuses to verify ("EE
// certificate key too weak").
func selfSigned(ip net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "hypervisor-notifier vcsim"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip != nil && !ip.Equal(net.IPv4(127, 0, 0, 1)) && !ip.Equal(net.IPv6loopback) {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
