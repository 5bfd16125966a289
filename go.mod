module github.com/postern-tunnel/postern

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/hashicorp/yamux v0.1.2 // indirect
	go.uber.org/goleak v1.3.0 // indirect
)
