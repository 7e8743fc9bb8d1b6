"""Crude pumping station: a storage tank fed by a pipeline, emptied by a variable-speed export pump.

The pipeline delivers crude into TK101 at a rate the station does not choose
(it wanders with upstream operations). LIC101 holds the tank level by trimming
the speed of export pump P101 (direct acting: a higher level speeds the pump
up). The pump's flow is where its curve meets the export line's system curve:

    suction head + H0 (n/n0)^2 - B Q^2 = static head + (C + R/x^2) Q^2,

so flow, head and power follow the affinity laws, a throttled outlet valve
XV101 (position x) cuts the flow, and below about 51 % speed the pump cannot
lift against the line's static head and delivers nothing. Pressures are gauge
pressures at the pump. A leak (``leak_m3h``) drains the tank where no meter
sees it, so the metered mass balance stops closing. Interlocks as a station
has them: the pump trips on low-low level (no suction) and restarts once the
level recovers; LSHH101 reports a high-high level.
"""

from __future__ import annotations

import math

from sim_plant.catalog import TagSpec
from sim_plant.control import PID
from sim_plant.plants.base import OrnsteinUhlenbeck, Plant, ramp

AREA = 50.0  # m2, an 8 m diameter tank
HEIGHT = 10.0  # m, overflows above
RHO = 850.0  # kg/m3, crude
RHO_G = RHO * 9.81  # N/m3
CP_CRUDE = 2.0  # kJ/(kg K)
Z_PUMP = 1.0  # m, tank floor above the pump suction
H0 = 130.0  # m, pump shut-off head at 100 % speed
B_PUMP = 1.25e-4  # m/(m3/h)^2, pump curve droop
K_SUCTION = 1.0 / 300.0**2  # m/(m3/h)^2, suction line loss
H_STATIC = 40.0  # m, export line static head (terminal elevation and back pressure)
C_LINE = 5.56e-4  # m/(m3/h)^2, export line friction
R_VALVE = 5.56e-5  # m/(m3/h)^2, outlet valve loss when fully open
ETA = 0.75  # pump and drive efficiency
SPEED_RAMP = 2.0  # %/s, drive ramp limit
STOP_RAMP = 10.0  # %/s, coast down after a stop
VALVE_STROKE = 100.0 / 60.0  # %/s, motor-operated valve, one minute end to end
LOW_TRIP, LOW_RESET = 1.0, 2.0  # m, pump low-low level trip and its reset
HIGH_HIGH = 9.0  # m, LSHH101
INFLOW = 250.0  # m3/h, nominal pipeline delivery
UA_TANK = 0.5  # kW/K, tank shell losses to ambient

AREA_NAME = "tank_farm"
_T = [
    TagSpec("TK101.LEVEL", "m", 4.7, 5.3, "crude storage tank level", AREA_NAME, loop="LIC101", noise_sd=0.005),
    TagSpec("LIC101.SP", "m", 4.0, 6.0, "tank level setpoint", AREA_NAME, role="setpoint", loop="LIC101"),
    TagSpec("FT101.FLOW_IN", "m3/h", 200.0, 300.0, "pipeline inflow to the tank", AREA_NAME, noise_sd=1.5),
    TagSpec("FT102.FLOW_OUT", "m3/h", 200.0, 300.0, "export flow", AREA_NAME, loop="LIC101", noise_sd=1.5),
    TagSpec(
        "P101.SPEED", "%", 65.0, 92.0, "export pump speed", AREA_NAME, role="actuator", loop="LIC101", noise_sd=0.1
    ),
    TagSpec("P101.RUNNING", "", 0.5, 1.5, "export pump running", AREA_NAME, role="status"),
    TagSpec("P101.POWER", "kW", 35.0, 85.0, "export pump motor power", AREA_NAME, noise_sd=0.5),
    TagSpec("PT101.SUCTION", "bar", 0.35, 0.55, "pump suction pressure", AREA_NAME, noise_sd=0.005),
    TagSpec("PT102.DISCHARGE", "bar", 5.0, 8.0, "pump discharge pressure", AREA_NAME, noise_sd=0.02),
    TagSpec(
        "XV101.POSITION",
        "%",
        95.0,
        101.0,
        "tank outlet valve position",
        AREA_NAME,
        role="actuator",
        noise_sd=0.2,
        min_reading=0.0,
    ),
    TagSpec("TT101.TEMP", "degC", 28.0, 42.0, "tank crude temperature", AREA_NAME, noise_sd=0.05),
    TagSpec("LSHH101.ALARM", "", -0.5, 0.5, "tank level high-high switch", AREA_NAME, role="status"),
]


class OilPlant(Plant):
    """Tank TK101 and export pump P101 of a crude pumping station."""

    name = "oil"
    TAGS = tuple(_T)
    SETPOINTS = {"LIC101.SP": 5.0}
    DISTURBANCES = 3

    def _start(self) -> None:
        dt = self.dt
        self.inflow_m3h = INFLOW  # nominal pipeline delivery; tests and scenarios step it
        self.leak_m3h = 0.0  # unmetered loss from the tank
        self.spilled_m3 = 0.0  # overflow into the bund, should the level reach the top
        self._supply = OrnsteinUhlenbeck(sd=10.0, tau_s=900.0, dt=dt)
        self._inlet_temp = OrnsteinUhlenbeck(sd=1.5, tau_s=3600.0, dt=dt)
        self._ambient = OrnsteinUhlenbeck(sd=2.0, tau_s=7200.0, dt=dt)
        self.level = self.setpoints["LIC101.SP"]
        self.temp = 35.0
        self.valve = 100.0
        self.running = True
        self._tripped = False
        self.flow_in = self.inflow_m3h
        self.flow_out = self.flow_in
        self.speed = self._speed_for(self.flow_out, self.level, self.valve)
        self.lic = PID(kp=115.0, ki=0.1, dt=dt, out_lo=30.0, out_hi=100.0, action="direct", pv_filter_s=10.0)
        self.lic.track(self.speed, self.level)
        self._hydraulics()

    @staticmethod
    def _speed_for(flow: float, level: float, valve: float) -> float:
        """Pump speed (%) that delivers ``flow`` at this level and valve position: the steady state."""
        r = K_SUCTION + B_PUMP + C_LINE + R_VALVE / max(valve / 100.0, 0.01) ** 2
        return 100.0 * math.sqrt((flow * flow * r + H_STATIC - level - Z_PUMP) / H0)

    def _hydraulics(self) -> None:
        """Operating point of pump and line for the current speed, valve and level."""
        n = self.speed / 100.0
        x = self.valve / 100.0
        if x < 0.005:
            q = 0.0
        else:
            r = K_SUCTION + B_PUMP + C_LINE + R_VALVE / (x * x)
            q = math.sqrt(max(self.level + Z_PUMP + H0 * n * n - H_STATIC, 0.0) / r)
        suction = self.level + Z_PUMP - K_SUCTION * q * q
        if q > 0.0:
            head = H0 * n * n - B_PUMP * q * q
            discharge = suction + head
        else:  # check valve shut: the gauge sees the line's back pressure or the pump's shut-off head
            head = H0 * n * n
            discharge = max(suction + head, H_STATIC)
        self.pump_flow = q
        self.suction_bar = RHO_G * suction / 1e5
        self.discharge_bar = RHO_G * discharge / 1e5
        hydraulic_kw = RHO_G * (q / 3600.0) * max(head, 0.0) / 1000.0
        self.power_kw = hydraulic_kw / ETA + 5.0 * n**3 if self.speed > 0.0 else 0.0

    def _advance(self, z: list[float]) -> None:
        dt = self.dt
        # Controls: the level loop sets the drive speed; interlocks and overrides have the last word.
        speed_cmd = self.command("P101.SPEED", self.lic.update(self.setpoints["LIC101.SP"], self.pv("TK101.LEVEL")))
        if self.level < LOW_TRIP:
            self._tripped = True
        elif self.level > LOW_RESET:
            self._tripped = False
        run_cmd = self.command("P101.RUNNING", 1.0) >= 0.5 and not self._tripped
        self.running = run_cmd
        if run_cmd:
            self.speed = ramp(self.speed, min(max(speed_cmd, 0.0), 100.0), SPEED_RAMP, dt)
        else:
            self.speed = ramp(self.speed, 0.0, STOP_RAMP, dt)
        self.valve = ramp(self.valve, min(max(self.command("XV101.POSITION", 100.0), 0.0), 100.0), VALVE_STROKE, dt)
        self._hydraulics()

        # Mass balance over the step; the pump cannot take more than the tank holds.
        self.flow_in = max(self.inflow_m3h + self._supply.step(z[0]), 0.0)
        volume = self.level * AREA
        available = volume + self.flow_in * dt / 3600.0
        leak = min(self.leak_m3h * dt / 3600.0, available)
        self.flow_out = min(self.pump_flow, (available - leak) * 3600.0 / dt)
        volume = available - leak - self.flow_out * dt / 3600.0
        if volume > AREA * HEIGHT:
            self.spilled_m3 += volume - AREA * HEIGHT
            volume = AREA * HEIGHT

        # Temperature: arriving crude mixes in; the shell loses a little heat to the weather.
        inlet = 35.0 + self._inlet_temp.step(z[1])
        ambient = 15.0 + 5.0 * math.sin(2.0 * math.pi * self.t / 86400.0) + self._ambient.step(z[2])
        held = max(volume, 1.0)
        mixing = self.flow_in / 3600.0 / held * (inlet - self.temp)
        losses = UA_TANK * (self.temp - ambient) / (RHO * CP_CRUDE * held)
        self.temp += dt * (mixing - losses)
        self.level = volume / AREA

    def _values(self) -> list[float]:
        return [
            self.level,
            self.setpoints["LIC101.SP"],
            self.flow_in,
            self.flow_out,
            self.speed,
            1.0 if self.running else 0.0,
            self.power_kw,
            self.suction_bar,
            self.discharge_bar,
            self.valve,
            self.temp,
            1.0 if self.level >= HIGH_HIGH else 0.0,
        ]


__all__ = ["AREA", "HEIGHT", "HIGH_HIGH", "OilPlant"]
