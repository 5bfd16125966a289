module github.com/postern-tunnel/postern

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/coreos/go-systemd/v22 v22.7.0 // indirect
	github.com/hashicorp/yamux v0.1.2 // indirect
	github.com/kardianos/service v1.3.0 // indirect
	github.com/pires/go-proxyproto v0.15.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
