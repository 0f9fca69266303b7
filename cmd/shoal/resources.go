package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// showResources is shoal info --resources [--target MEMBER].
func (a *app) showResources(cmd *cobra.Command, w io.Writer, target, format string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	r, err := c.Cluster.GetResources(cmd.Context(), &shoalv1.GetResourcesRequest{Target: target})
	if err != nil {
		return convert(err)
	}
	if format != "table" {
		return printData(w, format, r)
	}
	fmt.Fprint(w, resourcesText(r))
	return nil
}

// resourcesText renders a member's resources as info --resources prints
// them (LXD's sections: CPU, memory, storage, network).
func resourcesText(r *shoalv1.GetResourcesResponse) string {
	var b strings.Builder
	cpu, mem := r.GetCpu(), r.GetMemory()
	fmt.Fprintf(&b, "Member: %s\n", r.GetMember())
	fmt.Fprintf(&b, "CPU:\n  Architecture: %s\n  Model: %s\n  CPUs: %d", cpu.GetArchitecture(), cpu.GetModel(), cpu.GetCount())
	if cpu.GetSockets() > 0 && cpu.GetCores() > 0 {
		fmt.Fprintf(&b, " (%d socket(s), %d core(s) each)", cpu.GetSockets(), cpu.GetCores())
	}
	fmt.Fprintf(&b, "\nMemory:\n  Total: %s\n  Used: %s\n  Available: %s\n", humanBytes(mem.GetTotal()), humanBytes(mem.GetUsed()), humanBytes(mem.GetAvailable()))
	b.WriteString("Storage pools:\n")
	for _, p := range r.GetPools() {
		fmt.Fprintf(&b, "  %s (%s): %s used of %s\n", p.GetName(), p.GetDriver(), humanBytes(p.GetUsed()), humanBytes(p.GetTotal()))
	}
	b.WriteString("Network interfaces:\n")
	for _, i := range r.GetInterfaces() {
		fmt.Fprintf(&b, "  %s (%s, %s): MTU %d", i.GetName(), i.GetType(), i.GetState(), i.GetMtu())
		if i.GetHwaddr() != "" {
			fmt.Fprintf(&b, ", MAC %s", i.GetHwaddr())
		}
		if i.GetSpeedMbps() > 0 {
			fmt.Fprintf(&b, ", %d Mbit/s", i.GetSpeedMbps())
		}
		if len(i.GetAddresses()) > 0 {
			fmt.Fprintf(&b, ", %s", strings.Join(i.GetAddresses(), " "))
		}
		b.WriteString("\n")
	}
	return b.String()
}
