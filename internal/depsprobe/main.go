package main
import (
 _ "golang.org/x/sys/unix"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/gopacket/gopacket"
 _ "github.com/gopacket/gopacket/layers"
 _ "github.com/gopacket/gopacket/pcapgo"
 _ "github.com/vishvananda/netlink"
)
func main(){}
